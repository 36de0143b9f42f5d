// SPDX-License-Identifier: MIT
/*
 * The activity log and bitmap, shared by the queue threads; the metadata
 * thread that writes AL transactions.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "meta.h"
#include "util.h"

/* Bitmap pages written per fdatasync when evictions need them. */
#define META_PAGE_BATCH 32u

struct meta {
	pthread_mutex_t lock;	/* everything below, al and bm included */
	struct mdio *md;
	struct al *al;
	struct bm *bm;
	bool track_peer;
	struct repl *repl;
	unsigned int nr_queues;
	int wake_fd[META_MAX_QUEUES];
	uint64_t want_commit;	/* queues parked on a transaction */
	uint64_t want_free;	/* queues parked on -EBUSY */
	bool kicked;		/* kick_fd written, thread not yet looked */
	bool want_bm_sync;	/* meta_sync_bm() asked for it */
	uint64_t bm_sync_req;	/* meta_sync_bm_wait() tickets */
	uint64_t bm_sync_done;
	pthread_cond_t bm_sync_cond;
	bool stop;
	int error;		/* sticky metadata write error */

	uint64_t txns;
	uint64_t bm_pages;

	/* metadata thread only */
	int kick_fd;
	pthread_t thread;
	bool running;
	void *block;		/* one AL block */
	uint8_t *pages;		/* META_PAGE_BATCH encoded bitmap pages */
	uint64_t page_idx[META_PAGE_BATCH];
	uint32_t done[AL_UPDATES_PER_TXN]; /* evicted extents persisted */
	unsigned int nr_done;
};

struct meta *meta_create(struct mdio *m, unsigned int nr_queues,
			 bool track_peer)
{
	struct meta *mt;

	if (!m->al || !m->bm || !nr_queues || nr_queues > META_MAX_QUEUES) {
		errno = EINVAL;
		return NULL;
	}
	mt = calloc(1, sizeof(*mt));
	if (!mt)
		return NULL;
	mt->md = m;
	mt->al = m->al;
	mt->bm = m->bm;
	mt->nr_queues = nr_queues;
	mt->track_peer = track_peer;
	for (unsigned int i = 0; i < META_MAX_QUEUES; i++)
		mt->wake_fd[i] = -1;
	mt->kick_fd = eventfd(0, EFD_CLOEXEC);
	if (mt->kick_fd < 0)
		goto out_free;
	mt->block = aligned_alloc(AL_BLOCK_SIZE, AL_BLOCK_SIZE);
	mt->pages = aligned_alloc(BM_PAGE_SIZE,
				  (size_t)META_PAGE_BATCH * BM_PAGE_SIZE);
	if (!mt->block || !mt->pages)
		goto out_close;
	pthread_mutex_init(&mt->lock, NULL);
	pthread_cond_init(&mt->bm_sync_cond, NULL);
	return mt;

out_close:
	free(mt->block);
	free(mt->pages);
	close(mt->kick_fd);
out_free:
	free(mt);
	errno = ENOMEM;
	return NULL;
}

void meta_destroy(struct meta *mt)
{
	if (!mt)
		return;
	meta_stop(mt);
	pthread_cond_destroy(&mt->bm_sync_cond);
	pthread_mutex_destroy(&mt->lock);
	close(mt->kick_fd);
	free(mt->block);
	free(mt->pages);
	free(mt);
}

void meta_set_wake_fd(struct meta *mt, unsigned int q, int fd)
{
	if (q < mt->nr_queues)
		mt->wake_fd[q] = fd;
}

static void efd_signal(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) != sizeof(one))
		log_warn("meta: eventfd write: %s", strerror(errno));
}

static void wake_queues(struct meta *mt, uint64_t mask)
{
	for (unsigned int q = 0; mask && q < mt->nr_queues; q++) {
		if (mask & (1ULL << q))
			efd_signal(mt->wake_fd[q]);
		mask &= ~(1ULL << q);
	}
}

/* With the lock held: what to kick or wake once it is dropped. */
static bool need_kick(struct meta *mt)
{
	if (mt->kicked || !al_txn_pending(mt->al) || mt->error)
		return false;
	mt->kicked = true;
	return true;
}

int64_t meta_begin_io(struct meta *mt, unsigned int q, uint64_t sector,
		      uint64_t nr_sectors)
{
	bool kick = false;
	int64_t n;

	pthread_mutex_lock(&mt->lock);
	if (mt->error) {
		pthread_mutex_unlock(&mt->lock);
		return -EIO;
	}
	n = al_begin_io(mt->al, sector, nr_sectors);
	if (n > 0)
		mt->want_commit |= 1ULL << q;
	else if (n == -EBUSY)
		mt->want_free |= 1ULL << q;
	if (n > 0 || n == -EBUSY)
		kick = need_kick(mt);
	pthread_mutex_unlock(&mt->lock);
	if (kick)
		efd_signal(mt->kick_fd);
	return n;
}

int meta_seq_ready(struct meta *mt, unsigned int q, uint64_t seq)
{
	int ret;

	pthread_mutex_lock(&mt->lock);
	if (mt->error)
		ret = -EIO;
	else if (al_committed_seq(mt->al) >= seq)
		ret = 1;
	else {
		mt->want_commit |= 1ULL << q;
		ret = 0;
	}
	pthread_mutex_unlock(&mt->lock);
	return ret;
}

void meta_end_io(struct meta *mt, unsigned int q, uint64_t sector,
		 uint64_t nr_sectors)
{
	uint64_t wake;

	(void)q;
	pthread_mutex_lock(&mt->lock);
	/* No peer is ever connected yet: whatever reached the local disk
	 * (even a failed write may have changed part of it) is news to the
	 * peer. */
	if (mt->track_peer)
		bm_set_range(mt->bm, sector, nr_sectors);
	al_complete_io(mt->al, sector, nr_sectors);
	wake = mt->want_free;
	mt->want_free = 0;
	pthread_mutex_unlock(&mt->lock);
	if (wake)
		wake_queues(mt, wake);
}

static bool extent_done(const struct meta *mt, uint32_t e)
{
	for (unsigned int i = 0; i < mt->nr_done; i++)
		if (mt->done[i] == e)
			return true;
	return false;
}

/*
 * With the lock held: make the bitmap pages of the extents the next
 * transaction evicts durable. Encoding and marking clean happen under the
 * lock, so a bit set afterwards marks its page changed again and is never
 * lost; the write itself runs unlocked. Returns 1 to be called again
 * (more evictions may have been staged meanwhile), 0 when every evicted
 * extent is persisted, -errno on a write error.
 */
/*
 * Write the @k pages encoded at mt->pages (indexes in mt->page_idx) and
 * fdatasync, with the lock dropped around the I/O. Only the metadata thread
 * writes bitmap pages, so an older copy of a page never lands after a
 * newer one. On error every page counts as changed again.
 */
static int write_pages(struct meta *mt, unsigned int k)
{
	int ret = 0;

	pthread_mutex_unlock(&mt->lock);
	for (unsigned int i = 0; i < k && !ret; i++) {
		const uint8_t *buf = mt->pages + (size_t)i * BM_PAGE_SIZE;
		uint64_t off = mdio_bm_page_offset(mt->md, mt->page_idx[i]);
		size_t done = 0;

		while (done < BM_PAGE_SIZE) {
			ssize_t w = pwrite(mt->md->md_fd, buf + done,
					   BM_PAGE_SIZE - done,
					   (off_t)(off + done));

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				ret = w < 0 ? -errno : -EIO;
				break;
			}
			done += (size_t)w;
		}
	}
	while (!ret && fdatasync(mt->md->md_fd)) {
		if (errno != EINTR)
			ret = -errno;
	}
	pthread_mutex_lock(&mt->lock);
	if (ret) {
		/* The pages we marked clean are not on disk after all. */
		bm_mark_all_changed(mt->bm);
		return ret;
	}
	return 0;
}

static int persist_evicted(struct meta *mt)
{
	uint32_t ev[AL_UPDATES_PER_TXN];
	unsigned int k = 0;
	size_t n;
	int ret = 0;

	n = al_txn_evicted(mt->al, ev, ARRAY_SIZE(ev));
	if (n > ARRAY_SIZE(ev))
		n = ARRAY_SIZE(ev);
	for (size_t i = 0; i < n && k < META_PAGE_BATCH; i++) {
		uint64_t s, nr, first, last, p;

		if (extent_done(mt, ev[i]))
			continue;
		al_extent_range(mt->al, ev[i], &s, &nr);
		bm_pages_of_range(mt->bm, s, nr, &first, &last);
		for (p = first; p <= last && k < META_PAGE_BATCH; p++) {
			if (!bm_page_changed(mt->bm, p))
				continue;
			bm_page_encode(mt->bm, p,
				       mt->pages + (size_t)k * BM_PAGE_SIZE);
			bm_page_mark_clean(mt->bm, p);
			mt->page_idx[k++] = p;
		}
		if (p > last && mt->nr_done < ARRAY_SIZE(mt->done))
			mt->done[mt->nr_done++] = ev[i];
	}
	if (!k)
		return 0;

	ret = write_pages(mt, k);
	if (ret)
		return ret;
	mt->bm_pages += k;
	return 1;
}

/*
 * meta_sync_bm(): every changed page, so that a resync interrupted by a
 * crash resumes near where it stopped. With the lock held.
 */
static void persist_changed(struct meta *mt)
{
	int64_t p = 0;
	int ret;

	while (!mt->stop && !mt->error) {
		unsigned int k = 0;

		while (k < META_PAGE_BATCH &&
		       (p = bm_next_changed_page(mt->bm, (uint64_t)p)) >= 0) {
			bm_page_encode(mt->bm, (uint64_t)p,
				       mt->pages + (size_t)k * BM_PAGE_SIZE);
			bm_page_mark_clean(mt->bm, (uint64_t)p);
			mt->page_idx[k++] = (uint64_t)p++;
		}
		if (!k)
			return;
		ret = write_pages(mt, k);
		if (ret) {
			log_warn("meta: writing bitmap pages: %s",
				 strerror(-ret));
			return;
		}
		mt->bm_pages += k;
		if (p < 0)
			return;
	}
}

int meta_sync_bm_wait(struct meta *mt)
{
	uint64_t req;
	int ret;

	pthread_mutex_lock(&mt->lock);
	req = ++mt->bm_sync_req;
	mt->want_bm_sync = true;
	pthread_mutex_unlock(&mt->lock);
	efd_signal(mt->kick_fd);
	pthread_mutex_lock(&mt->lock);
	while (mt->bm_sync_done < req && !mt->stop && mt->running)
		pthread_cond_wait(&mt->bm_sync_cond, &mt->lock);
	ret = mt->bm_sync_done >= req ? mt->error : -ESHUTDOWN;
	pthread_mutex_unlock(&mt->lock);
	return ret;
}

void meta_sync_bm(struct meta *mt)
{
	pthread_mutex_lock(&mt->lock);
	mt->want_bm_sync = true;
	pthread_mutex_unlock(&mt->lock);
	efd_signal(mt->kick_fd);
}

/* With the lock held; may drop it for I/O. */
static void write_txns(struct meta *mt)
{
	while (!mt->stop && !mt->error && al_txn_pending(mt->al) &&
	       !al_txn_in_flight(mt->al)) {
		uint64_t wake;
		uint32_t rb;
		int ret;

		while ((ret = persist_evicted(mt)) > 0)
			;
		if (!ret)
			ret = al_txn_encode(mt->al, mt->block, &rb);
		if (ret) {
			log_err("meta: persisting the bitmap before an activity-log transaction failed: %s",
				strerror(-ret));
			mt->error = -EIO;
			goto out_wake;
		}
		mt->nr_done = 0;
		/* The pending transaction is empty again: writers parked on a
		 * full one may stage theirs now. */
		wake = mt->want_free;
		mt->want_free = 0;
		pthread_mutex_unlock(&mt->lock);
		wake_queues(mt, wake);

		ret = mdio_write_al_block(mt->md, rb, mt->block);

		pthread_mutex_lock(&mt->lock);
		if (ret) {
			log_err("meta: writing activity-log block %u failed: %s; failing writes",
				rb, strerror(-ret));
			al_txn_failed(mt->al);
			mt->error = -EIO;
		} else {
			al_txn_committed(mt->al);
			mt->txns++;
		}
out_wake:
		wake = mt->want_commit | mt->want_free;
		mt->want_commit = mt->want_free = 0;
		pthread_mutex_unlock(&mt->lock);
		wake_queues(mt, wake);
		pthread_mutex_lock(&mt->lock);
	}
}

static void *meta_main(void *arg)
{
	struct meta *mt = arg;
	uint64_t v;

	pthread_setname_np(pthread_self(), "duet-meta");
	for (;;) {
		if (read(mt->kick_fd, &v, sizeof(v)) < 0 && errno != EINTR) {
			log_err("meta: eventfd read: %s", strerror(errno));
			break;
		}
		pthread_mutex_lock(&mt->lock);
		mt->kicked = false;
		if (mt->stop) {
			pthread_mutex_unlock(&mt->lock);
			break;
		}
		write_txns(mt);
		if (mt->want_bm_sync) {
			uint64_t req = mt->bm_sync_req;

			mt->want_bm_sync = false;
			persist_changed(mt);
			mt->bm_sync_done = req;
			pthread_cond_broadcast(&mt->bm_sync_cond);
			/* transactions staged meanwhile */
			write_txns(mt);
		}
		pthread_mutex_unlock(&mt->lock);
	}
	return NULL;
}

int meta_start(struct meta *mt)
{
	int ret = pthread_create(&mt->thread, NULL, meta_main, mt);

	if (ret)
		return -ret;
	mt->running = true;
	return 0;
}

void meta_stop(struct meta *mt)
{
	if (!mt->running)
		return;
	pthread_mutex_lock(&mt->lock);
	mt->stop = true;
	pthread_cond_broadcast(&mt->bm_sync_cond);
	pthread_mutex_unlock(&mt->lock);
	efd_signal(mt->kick_fd);
	pthread_join(mt->thread, NULL);
	mt->running = false;
}

void meta_get_stats(struct meta *mt, struct meta_stats *st)
{
	pthread_mutex_lock(&mt->lock);
	st->txns = mt->txns;
	st->bm_pages = mt->bm_pages;
	st->al_active = al_nr_active(mt->al);
	st->al_slots = al_nr_slots(mt->al);
	st->committed_seq = al_committed_seq(mt->al);
	st->dirty_bytes = bm_dirty_bytes(mt->bm);
	st->error = mt->error;
	pthread_mutex_unlock(&mt->lock);
}

int meta_flush(struct meta *mt)
{
	int ret;

	pthread_mutex_lock(&mt->lock);
	ret = mdio_flush_bm(mt->md);
	pthread_mutex_unlock(&mt->lock);
	return ret;
}

void meta_mark_peer(struct meta *mt, uint64_t sector, uint64_t nr_sectors)
{
	pthread_mutex_lock(&mt->lock);
	bm_set_range(mt->bm, sector, nr_sectors);
	pthread_mutex_unlock(&mt->lock);
}

void meta_set_repl(struct meta *mt, struct repl *r)
{
	mt->repl = r;
}

struct repl *meta_repl(struct meta *mt)
{
	return mt->repl;
}

struct bm *meta_lock_bm(struct meta *mt)
{
	pthread_mutex_lock(&mt->lock);
	return mt->bm;
}

void meta_unlock_bm(struct meta *mt)
{
	pthread_mutex_unlock(&mt->lock);
}
