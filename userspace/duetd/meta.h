/* SPDX-License-Identifier: MIT */
/*
 * meta_ — the daemon's side of the activity log and the bitmap: one lock
 * around the (pure-data) al and bm that every queue shares, and the
 * metadata thread that makes AL transactions durable.
 *
 * A queue thread brackets every data-changing request:
 *
 *	n = meta_begin_io(mt, q, sector, nr);
 *	0         issue now (every extent is hot and durable)
 *	N > 0     park it; issue once meta_seq_ready(mt, q, N) says so
 *	-EBUSY    park it; call meta_begin_io() again when woken
 *	other < 0 fail the request with it (-EIO after a metadata error)
 *	...
 *	meta_end_io(mt, q, sector, nr);		after the data I/O, any result
 *
 * A queue that parks a request is woken through its eventfd (registered
 * with meta_set_wake_fd) when something it waits for may have happened: a
 * transaction became durable, or a reference was dropped. Nothing else
 * costs a syscall: the hot path is a mutex (uncontended) around
 * al_begin_io / al_complete_io.
 *
 * The metadata thread, for each staged transaction: persists the bitmap
 * pages of the extents it evicts (fdatasync), writes the 4 KiB AL block
 * (pwrite + fdatasync), then marks it committed and wakes the waiters. A
 * metadata write error is sticky: waiting and later writes fail with -EIO
 * rather than run unprotected.
 */
#ifndef DUET_META_H
#define DUET_META_H

#include <stdbool.h>
#include <stdint.h>

#include "mdio.h"

#define META_MAX_QUEUES 64

struct meta;

/*
 * Share @m's al and bm between @nr_queues queues. With @track_peer, every
 * completed write also marks its range in the bitmap (the peer is behind).
 * NULL with errno.
 */
struct meta *meta_create(struct mdio *m, unsigned int nr_queues,
			 bool track_peer);
void meta_destroy(struct meta *mt);

/* Queue @q's wake eventfd. Before meta_start(). */
void meta_set_wake_fd(struct meta *mt, unsigned int q, int fd);

/* Start / stop the metadata thread. Stop only with no I/O in flight. */
int meta_start(struct meta *mt);
void meta_stop(struct meta *mt);

int64_t meta_begin_io(struct meta *mt, unsigned int q, uint64_t sector,
		      uint64_t nr_sectors);
/*
 * Is transaction @seq durable? 1 yes, 0 not yet (the queue will be woken),
 * -EIO when metadata can no longer be written.
 */
int meta_seq_ready(struct meta *mt, unsigned int q, uint64_t seq);
void meta_end_io(struct meta *mt, unsigned int q, uint64_t sector,
		 uint64_t nr_sectors);

/*
 * The peer did not confirm a write (not connected, connection lost, the
 * peer failed it): mark its range in the bitmap. Call before meta_end_io
 * for that write, so the extent is still hot in the activity log (a crash
 * before the bitmap page is written is covered by the AL). Any thread.
 */
void meta_mark_peer(struct meta *mt, uint64_t sector, uint64_t nr_sectors);

/*
 * The replication handle the data paths use (repl.h), or NULL without a
 * peer. Set before the device starts; read by path threads.
 */
struct repl;
void meta_set_repl(struct meta *mt, struct repl *r);
struct repl *meta_repl(struct meta *mt);
/*
 * Have the metadata thread write every changed bitmap page (resync
 * progress: bits cleared). Asynchronous; any thread.
 */
void meta_sync_bm(struct meta *mt);
/* The same, waiting until the pages are on disk: 0, the sticky metadata
 * error, or -ESHUTDOWN when the thread is not running. */
int meta_sync_bm_wait(struct meta *mt);
/* The bitmap, for resync and status: only under meta's lock (below). */
struct bm *meta_lock_bm(struct meta *mt);
void meta_unlock_bm(struct meta *mt);

struct meta_stats {
	uint64_t txns;		/* AL transactions written */
	uint64_t bm_pages;	/* bitmap pages written for evictions */
	uint32_t al_active;	/* hot extents */
	uint32_t al_slots;
	uint64_t committed_seq;
	uint64_t dirty_bytes;	/* bitmap */
	int error;		/* sticky metadata error, 0 if none */
};
void meta_get_stats(struct meta *mt, struct meta_stats *st);

/*
 * Clean shutdown, with the queues and the thread stopped: persist every
 * changed bitmap page. 0 or -errno.
 */
int meta_flush(struct meta *mt);

#endif
