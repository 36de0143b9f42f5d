// SPDX-License-Identifier: MIT
/*
 * Local disk failure (on-io-error) and reads through the peer: the part of
 * repl_ that runs when the backing disk fails (see repl.h, peer.h, and
 * docs/replication.md, "Local disk failure").
 *
 *  - repl_io_error(): a data path's backing I/O failed. With `detach`, the
 *    disk goes Failed, then Diskless; its metadata is marked for a full
 *    sync (if it can still be written); the peer hears it in our STATE.
 *  - repl_read(): a read served by the peer's disk (READ_REQUEST, answered
 *    by READ_DATA), for a node whose disk is gone.
 *  - peer_serve_read(): the other side of it, on the apply worker, in
 *    stream order after every DATA sent before the request.
 *  - peer_diskless_state(): what a node with the data does when its peer
 *    loses its disk, and what the diskless node takes from the peer's
 *    STATE.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bm.h"
#include "eng.h"
#include "fence.h"
#include "log.h"
#include "peer.h"
#include "util.h"

/* A read waiting for the peer's READ_DATA. */
struct rread {
	repl_done_fn done;
	void *arg;
	uint32_t cookie;
	uint32_t gen;		/* bumps on every reuse: stale replies */
	uint64_t sector;
	uint32_t len;		/* bytes */
	void *buf;		/* where the data goes */
	bool used;
	int32_t next_free;
};

#define RREAD_SLOTS REPL_SLOTS

bool repl_local_disk(struct repl *r)
{
	return !__atomic_load_n(&r->disk_gone, __ATOMIC_ACQUIRE);
}

static const char *op_name(unsigned int op)
{
	switch (op) {
	case ENG_OP_READ:
		return "read";
	case ENG_OP_WRITE:
		return "write";
	case ENG_OP_FLUSH:
		return "flush";
	case ENG_OP_DISCARD:
		return "discard";
	case ENG_OP_WRITE_ZEROES:
		return "write-zeroes";
	}
	return "?";
}

/*
 * The detached disk must never pass for current again: every bit of the
 * bitmap set (it is ORed into the peer's at the next connection) and the
 * superblock saying Inconsistent and full-sync-needed, so the next
 * handshake makes this disk the target of a full sync. Best effort: a disk
 * whose metadata cannot be written either is covered by the peer, which
 * starts a new generation (peer_diskless_state). Lock held.
 */
static void mark_disk_failed(struct repl *r)
{
	struct md_super *sb = &r->p.md->sb;
	struct bm *bm;
	int ret;

	bm = meta_lock_bm(r->p.meta);
	bm_set_all(bm);
	meta_unlock_bm(r->p.meta);
	ret = meta_sync_bm_wait(r->p.meta);
	sb->flags &= ~(MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE);
	sb->flags |= MD_F_FULL_SYNC;
	if (!ret)
		ret = mdio_write_sb(r->p.md);
	if (ret)
		log_err("%s: the failed disk's metadata cannot be written either (%s): the peer's new generation keeps it from being taken for current",
			r->p.cfg->name, strerror(-ret));
	else
		log_notice("%s: the failed disk's metadata now says Inconsistent, full sync needed",
			   r->p.cfg->name);
}

bool repl_io_error(struct repl *r, unsigned int op, uint64_t sector,
		   uint32_t nr_sectors, int err)
{
	struct sm_req ev = { .type = SM_EV_IO_ERROR };
	struct sm_req det = { .type = SM_EV_DETACHED };
	json_t *extra;
	bool detached, busy;

	if (!repl_local_disk(r))
		return true;
	pthread_mutex_lock(&r->lock);
	r->io_errors++;
	if (r->disk_gone) {
		pthread_mutex_unlock(&r->lock);
		return true;
	}
	if (r->sm.on_io_error == CFG_IOERR_PASS_ON ||
	    r->sm.disk == SM_DISK_DISKLESS) {
		/* the handler hears of errors passed on too (it is told
		 * DUET_ON_IO_ERROR); fence.c limits it to one run at a time */
		fence_local_io_error_locked(r, err, sector, nr_sectors,
					    op != ENG_OP_READ);
		pthread_mutex_unlock(&r->lock);
		return false;
	}
	snprintf(r->disk_why, sizeof(r->disk_why),
		 "local I/O error: %s of sector %llu+%u: %s", op_name(op),
		 (unsigned long long)sector, nr_sectors, strerror(-err));
	r->disk_failed_at = time(NULL);
	log_err("%s: %s; on-io-error detach: the disk is detached, I/O goes to %s",
		r->p.cfg->name, r->disk_why, r->p.peer->name);
	/* from here on no path starts local I/O */
	__atomic_store_n(&r->disk_gone, 1, __ATOMIC_RELEASE);
	r->dl_current = r->p.md->sb.current_uuid;
	peer_sm_do(r, &ev, NULL, 0);
	detached = r->sm.disk == SM_DISK_FAILED;
	/* a resync or verify reads or writes this disk: the connection is
	 * dropped (lost() stops it); the next one finds this node diskless */
	busy = r->sync_source || r->sync_target || r->verifying ||
	       r->verify_target;
	mark_disk_failed(r);
	if (detached)
		peer_sm_do(r, &det, NULL, 0);
	extra = json_pack("{s:s, s:s, s:I, s:i}", "event", "disk-failed",
			  "op", op_name(op), "sector", (json_int_t)sector,
			  "sectors", (int)nr_sectors);
	peer_event(r, "io-error", r->disk_why, extra);
	/* handlers.local-io-error, queued (it runs on the handler thread) */
	fence_local_io_error_locked(r, err, sector, nr_sectors,
				    op != ENG_OP_READ);
	peer_send_state(r);
	pthread_mutex_unlock(&r->lock);
	if (busy)
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"local disk failed during a resync or verify");
	return true;
}

/* ---- reads through the peer (requester) ---- */

/* Lock held. */
static int rread_alloc(struct repl *r)
{
	if (r->rreads)
		return 0;
	r->rreads = calloc(RREAD_SLOTS, sizeof(*r->rreads));
	if (!r->rreads)
		return -ENOMEM;
	for (int32_t i = 0; i < RREAD_SLOTS; i++)
		r->rreads[i].next_free = i + 1 < RREAD_SLOTS ? i + 1 : -1;
	r->rread_free = 0;
	return 0;
}

/* Lock held: take slot @i off the books; returns its completion. */
static struct rread rread_put(struct repl *r, int32_t i)
{
	struct rread s = r->rreads[i];

	r->rreads[i].used = false;
	r->rreads[i].next_free = r->rread_free;
	r->rread_free = i;
	r->rreads_in_flight--;
	return s;
}

int repl_read(struct repl *r, uint64_t sector, uint32_t len, void *buf,
	      repl_done_fn done, void *arg, uint32_t cookie)
{
	struct proto_msg m = { .type = PROTO_READ_REQUEST };
	struct rread *s;
	int32_t i;
	int ret;

	pthread_mutex_lock(&r->lock);
	if (!r->conn_up || !r->replicating ||
	    r->sm.peer_disk != SM_DISK_UPTODATE) {
		pthread_mutex_unlock(&r->lock);
		return -ENOTCONN;
	}
	if (!(r->features & PROTO_F_REMOTE_READ)) {
		pthread_mutex_unlock(&r->lock);
		return -EOPNOTSUPP;
	}
	ret = rread_alloc(r);
	if (ret || r->rread_free < 0) {
		pthread_mutex_unlock(&r->lock);
		return ret ? ret : -EAGAIN;
	}
	i = r->rread_free;
	s = &r->rreads[i];
	r->rread_free = s->next_free;
	s->used = true;
	s->gen++;
	s->done = done;
	s->arg = arg;
	s->cookie = cookie;
	s->sector = sector;
	s->len = len;
	s->buf = buf;
	r->rreads_in_flight++;
	m.id = ((uint64_t)s->gen << 32) | (uint32_t)i;
	m.range.sector = sector;
	m.range.length = len;
	pthread_mutex_unlock(&r->lock);
	/* after every DATA already queued: the peer answers in that order */
	ret = conn_send(r->conn, &m, NULL, NULL, NULL, -1);
	if (ret) {
		pthread_mutex_lock(&r->lock);
		/* the connection's loss may have failed it meanwhile */
		if (s->used && s->gen == (uint32_t)(m.id >> 32)) {
			rread_put(r, i);
			pthread_mutex_unlock(&r->lock);
			return ret;
		}
		pthread_mutex_unlock(&r->lock);
		return 0;	/* completed by peer_fail_reads */
	}
	return 0;
}

/* Connection thread: the peer's READ_DATA. */
void peer_read_reply(struct repl *r, const struct proto_msg *m)
{
	const struct proto_block *b = &m->block;
	uint32_t i = (uint32_t)m->id;
	struct rread s;
	int res;

	pthread_mutex_lock(&r->lock);
	if (!r->rreads || i >= RREAD_SLOTS || !r->rreads[i].used ||
	    r->rreads[i].gen != (uint32_t)(m->id >> 32) ||
	    r->rreads[i].sector != b->sector || r->rreads[i].len != b->length) {
		pthread_mutex_unlock(&r->lock);
		log_err("%s: READ_DATA for sector %llu+%u answers no read of ours",
			r->p.cfg->name, (unsigned long long)b->sector,
			b->length);
		conn_disconnect(r->conn, PROTO_DISC_PROTOCOL,
				"unexpected READ_DATA");
		return;
	}
	s = rread_put(r, (int32_t)i);
	if (b->result) {
		res = -(int)b->result;
	} else {
		memcpy(s.buf, m->payload, b->length);
		r->remote_reads++;
		r->remote_read_bytes += b->length;
		res = 0;
	}
	pthread_mutex_unlock(&r->lock);
	if (res)
		log_warn("%s: %s could not read sector %llu+%u for us: %s",
			 r->p.cfg->name, r->p.peer->name,
			 (unsigned long long)b->sector, b->length,
			 strerror(-res));
	s.done(s.arg, s.cookie, res);
}

/* The connection went (or the daemon stops): no READ_DATA will come. */
void peer_fail_reads(struct repl *r)
{
	for (;;) {
		struct rread s;
		int32_t i;

		pthread_mutex_lock(&r->lock);
		for (i = 0; r->rreads && i < RREAD_SLOTS; i++)
			if (r->rreads[i].used)
				break;
		if (!r->rreads || i == RREAD_SLOTS) {
			pthread_mutex_unlock(&r->lock);
			return;
		}
		s = rread_put(r, i);
		pthread_mutex_unlock(&r->lock);
		s.done(s.arg, s.cookie, -ECONNRESET);
	}
}

/* ---- reads for the peer (server, apply worker) ---- */

static void free_cb(void *arg, int err)
{
	(void)err;
	free(arg);
}

/* Read [sector, +len) of our disk into a new buffer. 0 or -errno. */
static int read_block(struct repl *r, uint64_t sector, uint32_t len,
		      void **out)
{
	void *buf = aligned_alloc(4096, len);
	size_t done = 0;

	if (!buf)
		return -ENOMEM;
	while (done < len) {
		ssize_t n = pread(r->wfd, (char *)buf + done, len - done,
				  (off_t)(sector << SECTOR_SHIFT) + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return n < 0 ? -errno : -EIO;
		}
		done += (size_t)n;
	}
	*out = buf;
	return 0;
}

/*
 * Worker: the peer's READ_REQUEST, after every DATA it sent before, so the
 * block holds every write the peer completed before it asked. Answered
 * with the data, or with an errno when this disk cannot serve it.
 */
void peer_serve_read(struct repl *r, const struct proto_msg *m)
{
	struct proto_msg a = { .type = PROTO_READ_DATA, .id = m->id };
	enum sm_disk disk;
	void *buf = NULL;
	int ret = 0;

	pthread_mutex_lock(&r->lock);
	disk = r->sm.disk;
	pthread_mutex_unlock(&r->lock);
	a.block.sector = m->range.sector;
	a.block.length = m->range.length;
	if (disk != SM_DISK_UPTODATE || !repl_local_disk(r))
		ret = -ENODATA;
	else
		ret = read_block(r, m->range.sector, m->range.length, &buf);
	if (!ret && r->p.cfg->data_digest != CFG_DIGEST_NONE) {
		a.block.digest_alg = cfg_wire_digest(r->p.cfg->data_digest);
		ret = proto_digest(a.block.digest_alg, buf, m->range.length,
				   a.block.digest);
	}
	if (ret) {
		log_warn("%s: cannot serve %s's read of sector %llu+%u: %s",
			 r->p.cfg->name, r->p.peer->name,
			 (unsigned long long)m->range.sector, m->range.length,
			 strerror(-ret));
		free(buf);
		buf = NULL;
		memset(&a.block.digest, 0, sizeof(a.block.digest));
		a.block.digest_alg = PROTO_DIGEST_NONE;
		a.block.result = (uint32_t)-ret > PROTO_ERRNO_MAX ?
					 EIO :
					 (uint32_t)-ret;
	}
	if (r->stale) {
		free(buf);
		return;
	}
	ret = conn_send(r->conn, &a, buf, buf ? free_cb : NULL, buf, -1);
	if (ret) {
		free(buf);
		if (ret != -ENOTCONN)
			log_warn("%s: sending READ_DATA: %s", r->p.cfg->name,
				 strerror(-ret));
		return;
	}
	pthread_mutex_lock(&r->lock);
	r->reads_served++;
	pthread_mutex_unlock(&r->lock);
}

/* ---- the peer's disk state ---- */

/*
 * Lock held, after the decision on a STATE from the peer. @prev is the
 * peer's disk before it, @first whether it was the connection's first
 * STATE.
 *
 * A node with an UpToDate disk whose peer just lost its disk (within this
 * connection): from now on the peer's disk misses every write, and it
 * missed an unknown number of them already (the writes that failed there
 * came here as DATA before the peer knew). So every bit of our bitmap is
 * set (the returning disk gets a full sync), and a new generation starts:
 * if the failed disk comes back with its old metadata (it could not be
 * marked), its generation is older than ours and the handshake makes it
 * the sync target.
 */
void peer_diskless_state(struct repl *r, enum sm_disk prev, bool first)
{
	struct uuid_info u;
	struct bm *bm;
	int ret;

	if (first || prev == SM_DISK_DISKLESS ||
	    r->peer_disk_rx != SM_DISK_DISKLESS ||
	    r->sm.disk != SM_DISK_UPTODATE || !repl_local_disk(r))
		return;
	bm = meta_lock_bm(r->p.meta);
	bm_set_all(bm);
	meta_unlock_bm(r->p.meta);
	ret = meta_sync_bm_wait(r->p.meta);
	if (ret)
		log_err("%s: writing the bitmap: %s", r->p.cfg->name,
			strerror(-ret));
	peer_my_uuid(r, &u);
	uuid_new_current(&u, util_random_u64());
	if (!peer_save_uuid(r, &u))
		log_notice("%s: %s lost its disk: new generation %016llx, its disk gets a full sync when it returns",
			   r->p.cfg->name, r->p.peer->name,
			   (unsigned long long)u.current);
	peer_event(r, "peer-disk-failed", "the peer's disk failed", NULL);
	peer_send_state(r);
}

/*
 * Lock held, before the decision on a STATE from the peer: a diskless
 * node's data generation is the one of the disk it reads. It follows the
 * peer's within a connection, but not across connections: a peer that
 * moved on while we were apart would change the data under the
 * application (the handshake refuses that, uuid.c rule 3).
 */
void peer_diskless_adopt(struct repl *r, uint64_t peer_current)
{
	if (repl_local_disk(r) || !r->have_peer_state)
		return;
	if (r->dl_current != peer_current)
		log_info("%s: diskless: using %s's generation %016llx",
			 r->p.cfg->name, r->p.peer->name,
			 (unsigned long long)peer_current);
	r->dl_current = peer_current;
}

void peer_diskless_status(struct repl *r, json_t *o)
{
	json_t *j;

	pthread_mutex_lock(&r->lock);
	if (r->disk_gone) {
		j = json_object();
		json_object_set_new(j, "reason", json_string(r->disk_why));
		json_object_set_new(j, "time",
				    json_integer((json_int_t)r->disk_failed_at));
		json_object_set_new(j, "on_io_error",
				    json_string(sm_on_io_error_name(r->sm.on_io_error)));
	} else {
		j = json_null();
	}
	json_object_set_new(o, "disk_failure", j);
	j = json_object_get(o, "replication_stats");
	if (j) {
		json_object_set_new(j, "local_io_errors",
				    json_integer((json_int_t)r->io_errors));
		json_object_set_new(j, "remote_reads",
				    json_integer((json_int_t)r->remote_reads));
		json_object_set_new(j, "remote_read_bytes",
				    json_integer((json_int_t)r->remote_read_bytes));
		json_object_set_new(j, "reads_served",
				    json_integer((json_int_t)r->reads_served));
	}
	pthread_mutex_unlock(&r->lock);
}
