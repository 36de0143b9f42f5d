// SPDX-License-Identifier: MIT
/* Resync source (see resync.h). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bm.h"
#include "conn.h"
#include "log.h"
#include "repl.h"
#include "resync.h"
#include "util.h"

#define NS 1000000000ull

/* ---- rate control (pure) ---- */

void rs_rate_init(struct rs_rate *r, uint64_t max_bps, uint64_t min_bps,
		  uint64_t now_ns)
{
	memset(r, 0, sizeof(*r));
	r->max_bps = max_bps ? max_bps : 1;
	r->min_bps = min_bps > r->max_bps ? r->max_bps : min_bps;
	if (!r->min_bps)
		r->min_bps = 1;
	r->cur_bps = r->max_bps;
	r->last_ns = now_ns;
}

/* The bucket holds at most 50 ms at the current rate, and at least one
 * block, so a block can always go eventually. */
static uint64_t burst(const struct rs_rate *r, uint32_t bytes)
{
	uint64_t b = r->cur_bps / 20;

	return b > bytes ? b : bytes;
}

uint64_t rs_rate_delay(struct rs_rate *r, uint64_t now_ns, uint32_t bytes,
		       bool app_busy)
{
	uint64_t dt = now_ns > r->last_ns ? now_ns - r->last_ns : 0;
	uint64_t add, cap;

	if (app_busy)
		r->cur_bps = r->cur_bps / 2 > r->min_bps ? r->cur_bps / 2 :
							   r->min_bps;
	else
		r->cur_bps = r->cur_bps * 2 < r->max_bps ? r->cur_bps * 2 :
							   r->max_bps;
	/* dt * rate / 1e9 without overflow for dt up to ~584 years */
	add = dt / NS * r->cur_bps + dt % NS * r->cur_bps / NS;
	r->last_ns = now_ns;
	cap = burst(r, bytes);
	r->tokens = r->tokens + add > cap ? cap : r->tokens + add;
	if (r->tokens >= bytes) {
		r->tokens -= bytes;
		return 0;
	}
	return (bytes - r->tokens) * NS / r->cur_bps + 1;
}

/* ---- the source ---- */

/* Where a block is between taking its range and settling. */
enum rs_phase {
	PH_DATA = 0,	/* RS_DATA sent (or going out): RS_ACK next */
	PH_CSUM,	/* RS_CSUM sent: RS_IN_SYNC or RS_REQUEST next */
	PH_WANT_DATA,	/* RS_REQUEST came: the resync thread sends RS_DATA */
	PH_VERIFY,	/* OV_REQUEST sent: OV_REPLY next */
};

struct rs_block {
	struct resync *rs;
	uint64_t sector;
	uint64_t nr;		/* sectors */
	uint32_t range;		/* repl range handle */
	uint32_t gen;
	void *buf;
	uint8_t phase;		/* enum rs_phase */
	bool used;
	bool handed;		/* send completion came */
	bool acked;		/* RS_ACK (RS_IN_SYNC, OV_REPLY) came */
	bool same;		/* RS_IN_SYNC: nothing was sent */
	bool differs;		/* verify: the peer's block is not ours */
	int result;		/* from RS_ACK or the send */
};

struct resync {
	struct resync_params p;
	pthread_t thread;
	bool thread_ok;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	int error;
	struct rs_block blk[RESYNC_INFLIGHT];
	unsigned int in_flight;
	uint64_t sent_bytes;
	uint64_t same_bytes, oos_bytes, oos_blocks;
	uint64_t position;	/* verify: where the walk is */
	uint64_t since_sync;
	uint64_t last_sync_ns;
	uint64_t limit_bps;
	struct rs_rate rate;	/* the controller (under lock) */
	/* rate over a sliding window */
	uint64_t win_start_ns, win_bytes, rate_bps;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static int read_block(int fd, void *buf, size_t len, off_t off);

/* Both halves of a block are in: settle it. Lock held. */
static void block_settle(struct resync *rs, struct rs_block *b)
{
	struct bm *bm;
	uint64_t t;

	if (!b->handed || !b->acked)
		return;
	if (!b->result && rs->p.mode == RESYNC_VERIFY) {
		/* verify never clears bits; a difference set them already */
		rs->sent_bytes += b->nr << SECTOR_SHIFT;
		rs->win_bytes += b->nr << SECTOR_SHIFT;
		if (b->differs) {
			rs->oos_bytes += b->nr << SECTOR_SHIFT;
			rs->oos_blocks++;
		}
	} else if (!b->result) {
		bm = meta_lock_bm(rs->p.meta);
		bm_clear_range(bm, b->sector, b->nr);
		meta_unlock_bm(rs->p.meta);
		if (b->same)
			rs->same_bytes += b->nr << SECTOR_SHIFT;
		rs->sent_bytes += b->nr << SECTOR_SHIFT;
		rs->since_sync += b->nr << SECTOR_SHIFT;
		rs->win_bytes += b->nr << SECTOR_SHIFT;
	} else if (!rs->error && b->result != -ECONNRESET) {
		log_err("%s: resync of sector %llu+%llu failed: %s",
			rs->p.name, (unsigned long long)b->sector,
			(unsigned long long)b->nr, strerror(-b->result));
		rs->error = -EIO;
	}
	repl_range_put(rs->p.repl, b->range);
	b->used = false;
	rs->in_flight--;
	t = now_ns();
	if (rs->since_sync >= RESYNC_SYNC_BYTES || t - rs->last_sync_ns >= NS) {
		rs->since_sync = 0;
		rs->last_sync_ns = t;
		meta_sync_bm(rs->p.meta);
	}
	if (t - rs->win_start_ns >= 2 * NS) {
		rs->rate_bps = rs->win_bytes * NS / (t - rs->win_start_ns);
		rs->win_start_ns = t;
		rs->win_bytes = 0;
	}
	pthread_cond_broadcast(&rs->cond);
}

/* The transport let go of the block's buffer. Connection thread. */
static void on_sent(void *arg, int err)
{
	struct rs_block *b = arg;
	struct resync *rs = b->rs;

	pthread_mutex_lock(&rs->lock);
	b->handed = true;
	if (err) {
		b->acked = true;
		b->result = err;
	}
	block_settle(rs, b);
	pthread_mutex_unlock(&rs->lock);
}

void resync_ack(struct resync *rs, const struct proto_msg *m)
{
	uint32_t i = (uint32_t)m->id;
	struct rs_block *b;

	pthread_mutex_lock(&rs->lock);
	if (i < RESYNC_INFLIGHT) {
		b = &rs->blk[i];
		if (b->used && !b->acked && b->phase == PH_DATA &&
		    b->gen == (uint32_t)(m->id >> 32) &&
		    b->sector == m->range.sector &&
		    (b->nr << SECTOR_SHIFT) == m->range.length) {
			b->acked = true;
			b->result = m->range.result ? -(int)m->range.result : 0;
			block_settle(rs, b);
		}
	}
	pthread_mutex_unlock(&rs->lock);
}

/* The block an answer names, if it is one in @phase; lock held. */
static struct rs_block *answered(struct resync *rs, uint64_t id,
				 uint64_t sector, uint32_t length,
				 uint8_t phase)
{
	uint32_t i = (uint32_t)id;
	struct rs_block *b;

	if (i >= RESYNC_INFLIGHT)
		return NULL;
	b = &rs->blk[i];
	if (!b->used || b->acked || b->phase != phase ||
	    b->gen != (uint32_t)(id >> 32) || b->sector != sector ||
	    (b->nr << SECTOR_SHIFT) != length)
		return NULL;
	return b;
}

void resync_reply(struct resync *rs, const struct proto_msg *m)
{
	struct rs_block *b;

	pthread_mutex_lock(&rs->lock);
	b = answered(rs, m->id, m->range.sector, m->range.length, PH_CSUM);
	if (b && m->type == PROTO_RS_IN_SYNC) {
		b->same = true;
		b->acked = true;
		b->result = 0;
		block_settle(rs, b);
	} else if (b && m->type == PROTO_RS_REQUEST) {
		/* the target's block differs: the data goes from the
		 * buffer read for the digest (the range is still held) */
		b->phase = PH_WANT_DATA;
		pthread_cond_broadcast(&rs->cond);
	}
	pthread_mutex_unlock(&rs->lock);
}

void resync_verify_reply(struct resync *rs, const struct proto_msg *m,
			 int fd)
{
	uint8_t dg[PROTO_DIGEST_MAX];
	struct rs_block *b;
	size_t len;
	bool differs;
	int ret;

	pthread_mutex_lock(&rs->lock);
	b = answered(rs, m->id, m->block.sector, m->block.length, PH_VERIFY);
	pthread_mutex_unlock(&rs->lock);
	if (!b)
		return;
	/*
	 * The block stays ours until it settles, and its range is held, so
	 * no application write changes it under us; on a Secondary the
	 * peer's writes are applied by this same thread, in stream order.
	 */
	len = b->nr << SECTOR_SHIFT;
	ret = read_block(fd, b->buf, len, (off_t)(b->sector << SECTOR_SHIFT));
	if (!ret)
		ret = proto_digest(m->block.digest_alg, b->buf, len, dg);
	if (ret)
		log_err("%s: verify: reading sector %llu+%llu here: %s",
			rs->p.name, (unsigned long long)b->sector,
			(unsigned long long)b->nr, strerror(-ret));
	else if (m->block.result)
		log_err("%s: verify: the peer could not read sector %llu+%llu: %s",
			rs->p.name, (unsigned long long)b->sector,
			(unsigned long long)b->nr, strerror((int)m->block.result));
	differs = ret || m->block.result ||
		  memcmp(dg, m->block.digest, sizeof(dg));
	if (differs) {
		log_warn("%s: verify: sector %llu+%llu differs from the peer's",
			 rs->p.name, (unsigned long long)b->sector,
			 (unsigned long long)b->nr);
		meta_mark_peer(rs->p.meta, b->sector, b->nr);
	}
	pthread_mutex_lock(&rs->lock);
	if (b->used && !b->acked && b->phase == PH_VERIFY) {
		b->differs = differs;
		b->acked = true;
		b->result = 0;
		block_settle(rs, b);
	}
	pthread_mutex_unlock(&rs->lock);
}

void resync_abort(struct resync *rs)
{
	pthread_mutex_lock(&rs->lock);
	rs->stop = true;
	/* no RS_ACK will come: give the ranges back once the sends are
	 * done with the buffers (the bits stay set) */
	for (unsigned int i = 0; i < RESYNC_INFLIGHT; i++) {
		struct rs_block *b = &rs->blk[i];

		if (b->used && !b->acked) {
			b->acked = true;
			b->result = -ECONNRESET;
			block_settle(rs, b);
		}
	}
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
	/* a resync waiting for a range wakes up with the next put; make
	 * sure there is one */
	repl_range_kick(rs->p.repl);
}

static int read_block(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/*
 * A block to send: with O_DIRECT when it is aligned for it (the buffers
 * are), through the page cache otherwise or when the device refuses.
 */
static int read_data(struct resync *rs, void *buf, size_t len, off_t off)
{
	int ret;

	if (rs->p.dio_fd >= 0 && !(off % 4096) && !(len % 4096)) {
		ret = read_block(rs->p.dio_fd, buf, len, off);
		if (ret != -EINVAL)
			return ret;
	}
	return read_block(rs->p.fd, buf, len, off);
}

/* Wait for the rate limit, or until stopped. Lock held. */
static bool pace(struct resync *rs, struct rs_rate *rate, uint32_t bytes)
{
	for (;;) {
		bool busy = rs->p.app_busy && rs->p.app_busy(rs->p.arg);
		uint64_t d = rs_rate_delay(rate, now_ns(), bytes, busy);
		struct timespec until;

		rs->limit_bps = rate->cur_bps;
		if (!d || rs->stop)
			return !rs->stop;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)(d / NS);
		until.tv_nsec += (long)(d % NS);
		if (until.tv_nsec >= (long)NS) {
			until.tv_sec++;
			until.tv_nsec -= (long)NS;
		}
		pthread_cond_timedwait(&rs->cond, &rs->lock, &until);
	}
}

/* RS_DATA of block @b, from its buffer. Lock held; dropped around the
 * send. */
static int send_data(struct resync *rs, struct rs_block *b, uint64_t id)
{
	struct proto_msg m = { .type = PROTO_RS_DATA, .id = id };
	size_t len = b->nr << SECTOR_SHIFT;
	int ret;

	b->phase = PH_DATA;
	b->handed = false;
	m.block.sector = b->sector;
	m.block.length = (uint32_t)len;
	m.block.digest_alg = rs->p.digest_alg;
	if (rs->p.digest_alg != PROTO_DIGEST_NONE &&
	    proto_digest(rs->p.digest_alg, b->buf, len, m.block.digest))
		m.block.digest_alg = PROTO_DIGEST_NONE;
	pthread_mutex_unlock(&rs->lock);
	ret = conn_send(rs->p.conn, &m, b->buf, on_sent, b, -1);
	pthread_mutex_lock(&rs->lock);
	if (ret) {
		/* never sent: no callback will come */
		b->handed = b->acked = true;
		b->result = -ECONNRESET;
		block_settle(rs, b);
	}
	return ret;
}

/* RS_CSUM or OV_REQUEST of block @b: no payload, so the block counts as
 * handed over at once. Lock held; dropped around the send. */
static int send_question(struct resync *rs, struct rs_block *b, uint64_t id)
{
	struct proto_msg m = { .id = id };
	size_t len = b->nr << SECTOR_SHIFT;
	int ret = 0;

	m.type = b->phase == PH_CSUM ? PROTO_RS_CSUM : PROTO_OV_REQUEST;
	m.block.sector = b->sector;
	m.block.length = (uint32_t)len;
	m.block.digest_alg = rs->p.csum_alg;
	b->handed = true;
	pthread_mutex_unlock(&rs->lock);
	if (b->phase == PH_CSUM)
		ret = proto_digest(rs->p.csum_alg, b->buf, len, m.block.digest);
	if (!ret)
		ret = conn_send(rs->p.conn, &m, NULL, NULL, NULL, -1);
	pthread_mutex_lock(&rs->lock);
	if (ret && !b->acked) {
		b->acked = true;
		b->result = -ECONNRESET;
		block_settle(rs, b);
	}
	return ret;
}

/* Send one block [sector, sector + nr) from slot @i. Lock held; dropped
 * around the I/O. Returns 0 or -errno (the block was given up). */
static int send_block(struct resync *rs, unsigned int i, uint64_t sector,
		      uint64_t nr)
{
	struct rs_block *b = &rs->blk[i];
	bool verify = rs->p.mode == RESYNC_VERIFY;
	size_t len = nr << SECTOR_SHIFT;
	uint32_t range;
	uint64_t id;
	int ret;

	pthread_mutex_unlock(&rs->lock);
	ret = repl_range_take_wait(rs->p.repl, sector, nr, &range, &rs->stop);
	if (ret) {
		pthread_mutex_lock(&rs->lock);
		return ret;
	}
	/* verify reads its block when the answer is in (stream order) */
	ret = verify ? 0 : read_data(rs, b->buf, len,
				     (off_t)(sector << SECTOR_SHIFT));
	if (ret) {
		log_err("%s: resync: reading sector %llu+%llu: %s", rs->p.name,
			(unsigned long long)sector, (unsigned long long)nr,
			strerror(-ret));
		repl_range_put(rs->p.repl, range);
		pthread_mutex_lock(&rs->lock);
		return -EIO;
	}
	pthread_mutex_lock(&rs->lock);
	b->sector = sector;
	b->nr = nr;
	b->range = range;
	b->gen++;
	b->used = true;
	b->handed = b->acked = false;
	b->same = b->differs = false;
	b->result = 0;
	b->phase = verify ? PH_VERIFY :
		   rs->p.mode == RESYNC_CSUM ? PH_CSUM : PH_DATA;
	rs->in_flight++;
	id = ((uint64_t)b->gen << 32) | i;
	if (b->phase == PH_DATA)
		return send_data(rs, b, id);
	return send_question(rs, b, id);
}

/* RS_DATA for blocks whose RS_CSUM the target answered with RS_REQUEST.
 * Lock held. */
static int send_wanted(struct resync *rs)
{
	for (unsigned int i = 0; i < RESYNC_INFLIGHT; i++) {
		struct rs_block *b = &rs->blk[i];
		int ret;

		if (!b->used || b->acked || b->phase != PH_WANT_DATA)
			continue;
		ret = send_data(rs, b, ((uint64_t)b->gen << 32) | i);
		if (ret)
			return ret;
	}
	return 0;
}

/* The next block to verify: [*start, *start + *nr); -ENOENT at the end. */
static int next_verify(struct resync *rs, uint64_t *start, uint64_t *nr)
{
	uint64_t left;

	if (rs->position >= rs->p.dev_sectors)
		return -ENOENT;
	left = rs->p.dev_sectors - rs->position;
	*start = rs->position;
	*nr = left < RESYNC_VERIFY_BLOCK >> SECTOR_SHIFT ?
		      left :
		      RESYNC_VERIFY_BLOCK >> SECTOR_SHIFT;
	rs->position += *nr;
	return 0;
}

static void *resync_main(void *arg)
{
	struct resync *rs = arg;
	struct rs_rate *rate = &rs->rate;
	uint64_t cursor = 0, start, nr;
	bool rescanned = false;
	struct bm *bm;
	int ret, err = 0;

	pthread_setname_np(pthread_self(), "duet-resync");
	pthread_mutex_lock(&rs->lock);
	rs_rate_init(rate, rs->p.max_bps, rs->p.min_bps, now_ns());
	rs->last_sync_ns = rs->win_start_ns = now_ns();
	while (!rs->stop && !rs->error) {
		unsigned int i;

		ret = send_wanted(rs);
		if (ret) {
			if (!rs->error)
				rs->error = -ECONNRESET;
			break;
		}
		for (i = 0; i < RESYNC_INFLIGHT && rs->blk[i].used; i++)
			;
		if (i == RESYNC_INFLIGHT) {
			pthread_cond_wait(&rs->cond, &rs->lock);
			continue;
		}
		if (rs->p.mode == RESYNC_VERIFY) {
			if (next_verify(rs, &start, &nr)) {
				if (!rs->in_flight)
					break;	/* all compared */
				pthread_cond_wait(&rs->cond, &rs->lock);
				continue;
			}
			if (!pace(rs, rate, (uint32_t)(nr << SECTOR_SHIFT)))
				break;
			ret = send_block(rs, i, start, nr);
			if (ret && ret != -ECANCELED && !rs->error)
				rs->error = -ECONNRESET;
			continue;
		}
		bm = meta_lock_bm(rs->p.meta);
		ret = bm_next_dirty(bm, cursor, &start, &nr);
		meta_unlock_bm(rs->p.meta);
		if (ret) {
			if (rs->in_flight) {
				/* bits of blocks in flight are still set:
				 * look again once they are settled (or one
				 * wants its data sent) */
				pthread_cond_wait(&rs->cond, &rs->lock);
				cursor = 0;
				continue;
			}
			if (cursor && !rescanned) {
				cursor = 0;
				rescanned = true;
				continue;
			}
			break;	/* clean */
		}
		rescanned = false;
		/* skip what is in flight already */
		for (unsigned int k = 0; k < RESYNC_INFLIGHT; k++) {
			const struct rs_block *b = &rs->blk[k];

			if (b->used && b->sector <= start &&
			    start < b->sector + b->nr) {
				nr = 0;
				start = b->sector + b->nr;
				break;
			}
		}
		if (!nr) {
			cursor = start;
			continue;
		}
		if (nr > RESYNC_BLOCK >> SECTOR_SHIFT)
			nr = RESYNC_BLOCK >> SECTOR_SHIFT;
		for (unsigned int k = 0; k < RESYNC_INFLIGHT; k++) {
			const struct rs_block *b = &rs->blk[k];

			if (b->used && start < b->sector &&
			    b->sector < start + nr)
				nr = b->sector - start;
		}
		cursor = start + nr;
		if (!pace(rs, rate, (uint32_t)(nr << SECTOR_SHIFT)))
			break;
		ret = send_block(rs, i, start, nr);
		if (ret && ret != -ECANCELED && !rs->error)
			rs->error = ret == -EIO ? -EIO : -ECONNRESET;
	}
	/* wait for what is in flight: acks, or the connection's end */
	while (rs->in_flight && !rs->stop) {
		if (send_wanted(rs) && !rs->error)
			rs->error = -ECONNRESET;
		if (rs->in_flight && !rs->stop)
			pthread_cond_wait(&rs->cond, &rs->lock);
	}
	err = rs->error;
	if (!rs->stop) {
		pthread_mutex_unlock(&rs->lock);
		meta_sync_bm(rs->p.meta);
		rs->p.done(rs->p.arg, rs, err, rs->sent_bytes);
		pthread_mutex_lock(&rs->lock);
	}
	pthread_mutex_unlock(&rs->lock);
	return NULL;
}

struct resync *resync_start(const struct resync_params *p)
{
	struct resync *rs = calloc(1, sizeof(*rs));
	int ret;

	if (!rs)
		return NULL;
	rs->p = *p;
	pthread_mutex_init(&rs->lock, NULL);
	pthread_cond_init(&rs->cond, NULL);
	for (unsigned int i = 0; i < RESYNC_INFLIGHT; i++) {
		rs->blk[i].rs = rs;
		/* a late answer to an earlier resync (paused, or this same
		 * connection's verify) must not match one of ours */
		rs->blk[i].gen = (uint32_t)util_random_u64();
		rs->blk[i].buf = aligned_alloc(4096, RESYNC_BLOCK);
		if (!rs->blk[i].buf) {
			ret = ENOMEM;
			goto out_free;
		}
	}
	ret = pthread_create(&rs->thread, NULL, resync_main, rs);
	if (ret)
		goto out_free;
	rs->thread_ok = true;
	return rs;

out_free:
	for (unsigned int i = 0; i < RESYNC_INFLIGHT; i++)
		free(rs->blk[i].buf);
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
	errno = ret;
	return NULL;
}

void resync_free(struct resync *rs)
{
	if (!rs)
		return;
	if (rs->thread_ok)
		pthread_join(rs->thread, NULL);
	/* blocks still held (aborted): their sends completed before the
	 * connection's lost(); give the ranges back, keep the bits */
	for (unsigned int i = 0; i < RESYNC_INFLIGHT; i++) {
		if (rs->blk[i].used)
			repl_range_put(rs->p.repl, rs->blk[i].range);
		free(rs->blk[i].buf);
	}
	pthread_cond_destroy(&rs->cond);
	pthread_mutex_destroy(&rs->lock);
	free(rs);
}

void resync_set_rate(struct resync *rs, uint64_t max_bps, uint64_t min_bps)
{
	pthread_mutex_lock(&rs->lock);
	rs->rate.max_bps = max_bps ? max_bps : 1;
	rs->rate.min_bps = min_bps > rs->rate.max_bps ? rs->rate.max_bps :
							 min_bps;
	if (!rs->rate.min_bps)
		rs->rate.min_bps = 1;
	if (rs->rate.cur_bps > rs->rate.max_bps)
		rs->rate.cur_bps = rs->rate.max_bps;
	/* a pace() waiting on the old rate looks again */
	pthread_cond_broadcast(&rs->cond);
	pthread_mutex_unlock(&rs->lock);
}

void resync_get_info(struct resync *rs, struct resync_info *out)
{
	pthread_mutex_lock(&rs->lock);
	out->sent_bytes = rs->sent_bytes;
	out->same_bytes = rs->same_bytes;
	out->oos_bytes = rs->oos_bytes;
	out->oos_blocks = rs->oos_blocks;
	out->position = rs->position;
	out->rate_bps = rs->rate_bps;
	out->limit_bps = rs->limit_bps;
	out->running = !rs->stop && !rs->error;
	pthread_mutex_unlock(&rs->lock);
}
