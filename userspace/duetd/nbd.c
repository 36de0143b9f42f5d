// SPDX-License-Identifier: MIT
/*
 * The NBD server thread: listener, clients and the data path on one
 * io_uring (see nbd.h and docs/nbd.md).
 *
 * This file holds the server thread: listening, accepting, the 1 s timer,
 * the loop that dispatches every completion, start and stop, counters and
 * status. What happens on a client's connection (handshake, requests,
 * slots, pieces, replies) is in nbd_client.c; what the two share is in
 * nbd_int.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "nbd_int.h"
#include "util.h"

/* ------------------------------------------------------------ listening */

/* Split "host:port", "[v6]:port", "host", ":port", "port"; NULL or why. */
static const char *split_endpoint(const char *spec, char *host, size_t hl,
				  char *port, size_t pl)
{
	const char *colon, *end, *h = spec;
	size_t n;

	if (spec[0] == '[') {
		end = strchr(spec, ']');
		if (!end)
			return "missing ]";
		if (end[1] && end[1] != ':')
			return "expected :port after ]";
		colon = end[1] ? end + 1 : NULL;
		h = spec + 1;
		n = (size_t)(end - h);
	} else if (spec[0] && strspn(spec, "0123456789") == strlen(spec)) {
		/* A port alone: the loopback interface, never all of them. */
		colon = spec - 1;
		n = 0;
	} else {
		colon = strrchr(spec, ':');
		if (colon && strchr(spec, ':') != colon)
			return "IPv6 addresses need brackets, like [::1]:10809";
		n = colon ? (size_t)(colon - spec) : strlen(spec);
	}
	if (n >= hl)
		return "host name too long";
	if (n) {
		memcpy(host, h, n);
		host[n] = '\0';
	} else {
		snprintf(host, hl, "127.0.0.1");
	}
	if (colon && !colon[1])
		return "expected a port after :";
	snprintf(port, pl, "%s", colon ? colon + 1 : "10809");
	return NULL;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *buf,
		     size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		buf[0] = '\0';
	}
}

static int listen_unix(struct nbd_server *s, const char *path, char *why,
		       size_t wl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat sb;
	int fd, ret;

	if (path[0] != '/' || strlen(path) >= sizeof(sa.sun_path))
		return util_why(-EINVAL, why, wl,
				"nbd-listen: unix:%s: expected an absolute path of at most %zu bytes",
				path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	/* A stale socket of a daemon that died is replaced; a live one or
	 * anything that is not a socket is left alone. */
	if (!lstat(path, &sb)) {
		if (!S_ISSOCK(sb.st_mode))
			return util_why(-EEXIST, why, wl,
					"nbd-listen: %s exists and is not a socket",
					path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 &&
		    !connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			close(fd);
			return util_why(-EADDRINUSE, why, wl,
					"nbd-listen: %s is in use by a live server",
					path);
		}
		if (fd >= 0)
			close(fd);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return util_why(-errno, why, wl, "nbd: socket: %s",
				strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		close(fd);
		return util_why(ret, why, wl, "nbd-listen: bind %s: %s", path,
				strerror(-ret));
	}
	/* The export has no authentication: only duetd's user may connect.
	 * Set before listen(), so there is no moment with a wider mode. */
	if (chmod(path, 0600) || listen(fd, 64)) {
		ret = -errno;
		close(fd);
		unlink(path);
		return util_why(ret, why, wl, "nbd-listen: %s: %s", path,
				strerror(-ret));
	}
	snprintf(s->unix_path, sizeof(s->unix_path), "%s", path);
	snprintf(s->addr, sizeof(s->addr), "unix:%s", path);
	s->lfd = fd;
	return 0;
}

static int listen_tcp(struct nbd_server *s, const char *spec, char *why,
		      size_t wl)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV,
	};
	struct addrinfo *res, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port[16];
	int fd = -1, one = 1, ret, err = EADDRNOTAVAIL;
	const char *bad;

	bad = split_endpoint(spec, host, sizeof(host), port, sizeof(port));
	if (bad)
		return util_why(-EINVAL, why, wl, "nbd-listen: \"%s\": %s",
				spec, bad);
	ret = getaddrinfo(host, port, &hints, &res);
	if (ret)
		return util_why(-EINVAL, why, wl, "nbd-listen: \"%s\": %s",
				spec, gai_strerror(ret));
	/* The first address that binds: exactly what was configured. */
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
				   sizeof(one));
		if (!bind(fd, ai->ai_addr, ai->ai_addrlen) && !listen(fd, 64))
			break;
		err = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return util_why(-err, why, wl, "nbd-listen: \"%s\": %s", spec,
				strerror(err));
	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		ss.ss_family = AF_UNSPEC;
	fmt_addr(&ss, s->addr, sizeof(s->addr));
	s->lfd = fd;
	return 0;
}

/* ------------------------------------------------------ accept, timer */

static void post_accept(struct nbd_server *s)
{
	struct io_uring_sqe *sqe;

	if (s->accept_busy || s->stopping)
		return;
	sqe = get_sqe(s);
	if (!sqe)
		return;		/* the timer tries again */
	io_uring_prep_accept(sqe, s->lfd, NULL, NULL, SOCK_CLOEXEC);
	sqe->user_data = eng_ud(false, KIND_ACCEPT, 0);
	s->accept_busy = true;
}

static void on_accept(struct nbd_server *s, int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	unsigned int ci;
	struct client *c;
	uint8_t *rx;
	int one = 1;

	s->accept_busy = false;
	if (fd < 0) {
		if (fd != -ECANCELED && fd != -EINVAL && log_quota(s))
			log_warn("nbd: accept: %s", strerror(-fd));
		/* out of fds or memory: the timer re-arms it in a second */
		if (fd != -EMFILE && fd != -ENFILE && fd != -ENOMEM)
			post_accept(s);
		return;
	}
	st_add(&s->st.accepted, 1);
	for (ci = 0; ci < s->p.max_conns && s->cl[ci].st != C_FREE; ci++)
		;
	if (ci == s->p.max_conns || s->stopping) {
		st_add(&s->st.refused, 1);
		if (log_quota(s))
			log_warn("nbd: %u clients connected already: refusing another",
				 s->p.max_conns);
		close(fd);
		post_accept(s);
		return;
	}
	c = &s->cl[ci];
	rx = c->rx;
	memset(c, 0, sizeof(*c));
	c->rx = rx;
	c->fd = fd;
	c->wr_slot = c->rq_head = c->rq_tail = -1;
	c->since = time(NULL);
	if (!getpeername(fd, (struct sockaddr *)&ss, &sl)) {
		fmt_addr(&ss, c->peer, sizeof(c->peer));
		/* the spec asks for it: replies are small */
		if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
				   sizeof(one));
	}
	if (!c->peer[0])
		snprintf(c->peer, sizeof(c->peer), "unix client %u", ci);
	c->hs = nbdp_hs_new(&s->exp);
	if (!c->hs) {
		log_err("nbd: no memory for a handshake");
		close(fd);
		post_accept(s);
		return;
	}
	c->st = C_HS;
	s->nr_clients++;
	st_add(&s->st.clients, 1);
	log_dbg(LOG_CAT_NBD, "nbd: %s: accepted", c->peer);
	nbd_hs_step(s, ci);
	post_accept(s);
}

static void post_timer(struct nbd_server *s)
{
	struct io_uring_sqe *sqe;

	if (s->stopping)
		return;
	sqe = get_sqe(s);
	if (!sqe)
		return;
	s->tick.tv_sec = 1;
	s->tick.tv_nsec = 0;
	io_uring_prep_timeout(sqe, &s->tick, 0, 0);
	sqe->user_data = eng_ud(false, KIND_TIMER, 0);
}

static void on_timer(struct nbd_server *s)
{
	time_t now = time(NULL);

	for (unsigned int ci = 0; ci < s->p.max_conns; ci++) {
		struct client *c = &s->cl[ci];

		if (c->st == C_HS && now - c->since >= s->p.hs_timeout_s)
			nbd_client_close(s, ci, true,
					 "handshake not finished in %u s",
					 s->p.hs_timeout_s);
	}
	if (++s->ticks % 60 == 0)
		s->nr_logged = 0;
	post_accept(s);
	post_timer(s);
}

/* ------------------------------------------------------------- the loop */

/* Stop accepting and let every client go; the loop ends once they are
 * all released and the path is idle. */
static void begin_stop(struct nbd_server *s)
{
	struct io_uring_sqe *sqe;

	s->stopping = true;
	/* A pending accept on a TCP socket does not notice shutdown(). */
	if (s->accept_busy) {
		sqe = get_sqe(s);
		if (sqe) {
			io_uring_prep_cancel64(
				sqe, eng_ud(false, KIND_ACCEPT, 0), 0);
			sqe->user_data = eng_ud(false, KIND_CANCEL, 0);
		}
		shutdown(s->lfd, SHUT_RDWR);
	}
	for (unsigned int ci = 0; ci < s->p.max_conns; ci++)
		nbd_client_close(s, ci, false, "the server stops");
}

static void on_cqe(struct nbd_server *s, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;
	unsigned int tag = eng_ud_tag(ud);

	if (path_cqe(s->path, cqe))
		return;
	switch (eng_ud_kind(ud)) {
	case KIND_ACCEPT:
		on_accept(s, cqe->res);
		break;
	case KIND_RECV:
		if (tag < s->p.max_conns)
			nbd_on_recv(s, tag, cqe->res);
		break;
	case KIND_SEND:
		if (tag < s->p.max_conns)
			nbd_on_send(s, tag, cqe->res);
		break;
	case KIND_TIMER:
		on_timer(s);
		break;
	default:
		break;
	}
}

static void run(struct nbd_server *s)
{
	while (!s->stopping || s->accept_busy || s->nr_clients ||
	       path_busy(s->path)) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;
		int ret;

		if (!s->stopping && __atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
			begin_stop(s);
		path_flush(s->path);
		ret = io_uring_submit_and_wait(&s->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY && ret != -ETIME) {
			log_err("nbd: io_uring_enter: %s", strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&s->ring, head, cqe) {
			on_cqe(s, cqe);
			n++;
		}
		io_uring_cq_advance(&s->ring, n);
	}
	log_dbg(LOG_CAT_NBD, "nbd: thread ends");
}

static int setup_ring(struct nbd_server *s)
{
	unsigned int entries = 64;
	struct io_uring_params prm;
	int ret;

	/* recv + send per client, a piece per slot (a FUA write may take
	 * two engine SQEs), accept, timer, wake */
	while (entries < 2 * s->p.max_conns + 2 * s->p.depth + 8)
		entries <<= 1;
	memset(&prm, 0, sizeof(prm));
	/* Only this thread submits, and it reaps when it waits. */
	prm.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
		    IORING_SETUP_DEFER_TASKRUN;
	ret = io_uring_queue_init_params(entries, &s->ring, &prm);
	if (ret == -EINVAL) {
		memset(&prm, 0, sizeof(prm));
		ret = io_uring_queue_init_params(entries, &s->ring, &prm);
	}
	if (ret < 0) {
		log_err("nbd: io_uring setup: %s", strerror(-ret));
		return ret;
	}
	s->ring_ok = true;
	ret = path_start(s->path, &s->ring, -1, false);
	if (ret)
		return ret;
	post_accept(s);
	post_timer(s);
	return 0;
}

static void ready(struct nbd_server *s, int err)
{
	pthread_mutex_lock(&s->ready_lock);
	s->ready_done = true;
	s->ready_err = err;
	pthread_cond_broadcast(&s->ready_cond);
	pthread_mutex_unlock(&s->ready_lock);
}

static void *nbd_main(void *arg)
{
	struct nbd_server *s = arg;
	int ret;

	pthread_setname_np(pthread_self(), "duet-nbd");
	ret = setup_ring(s);

	ready(s, ret);
	if (!ret)
		run(s);
	/* tearing the ring down cancels whatever is left */
	if (s->ring_ok)
		io_uring_queue_exit(&s->ring);
	s->ring_ok = false;
	path_stop(s->path);
	return NULL;
}

/* ------------------------------------------------------------------ API */

static int make_export(struct nbd_server *s, char *why, size_t wl)
{
	const struct nbd_params *p = &s->p;
	char ewhy[160];

	if (!p->name || !p->name[0] ||
	    strlen(p->name) > NBDP_OWN_STRING_MAX ||
	    (p->description && strlen(p->description) > NBDP_OWN_STRING_MAX))
		return util_why(-EINVAL, why, wl, "nbd: bad export name");
	snprintf(s->name, sizeof(s->name), "%s", p->name);
	snprintf(s->desc, sizeof(s->desc), "%s",
		 p->description ? p->description : "");
	/* The path counts in sectors. */
	if (p->min_block < SECTOR_SIZE || !is_pow2(p->piece_bytes) ||
	    p->piece_bytes < p->min_block || p->zero_bytes % p->min_block ||
	    p->max_payload < p->piece_bytes)
		return util_why(-EINVAL, why, wl,
				"nbd: min_block %u, piece_bytes %u, zero_bytes %u or max_payload %u invalid",
				p->min_block, p->piece_bytes, p->zero_bytes,
				p->max_payload);
	s->exp = (struct nbdp_export){
		.name = s->name,
		.description = p->description ? s->desc : NULL,
		/* a partial last block could not be addressed anyway */
		.size = ROUND_DOWN(p->size, p->min_block),
		/* CAN_MULTI_CONN: every client goes through the one path
		 * of this thread and one flush-elision state, so a FLUSH
		 * covers what any client saw completed (docs/nbd.md). */
		.tflags = NBDP_TF_SEND_FLUSH | NBDP_TF_SEND_FUA |
			  NBDP_TF_SEND_WRITE_ZEROES | NBDP_TF_CAN_MULTI_CONN |
			  (p->trim ? NBDP_TF_SEND_TRIM : 0) |
			  (p->read_only ? NBDP_TF_READ_ONLY : 0),
		.min_block = p->min_block,
		.pref_block = p->pref_block < 4096 ? 4096 : p->pref_block,
		.max_payload = p->max_payload,
	};
	if (s->exp.pref_block > s->exp.max_payload)
		s->exp.pref_block = s->exp.max_payload;
	if (nbdp_export_check(&s->exp, ewhy, sizeof(ewhy)))
		return util_why(-EINVAL, why, wl, "nbd: export: %s", ewhy);
	return 0;
}

static void nbd_free(struct nbd_server *s)
{
	path_destroy(s->path);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->unix_path[0])
		unlink(s->unix_path);
	if (s->cl)
		for (unsigned int i = 0; i < s->p.max_conns; i++)
			free(s->cl[i].rx);
	if (s->slots)
		for (unsigned int i = 0; i < s->p.depth; i++) {
			free(s->slots[i].buf);
			free(s->slots[i].big);
		}
	free(s->cl);
	free(s->slots);
	free(s->zeroes);
	pthread_cond_destroy(&s->ready_cond);
	pthread_mutex_destroy(&s->ready_lock);
	free(s);
}

static int alloc_state(struct nbd_server *s, char *why, size_t wl)
{
	s->cl = calloc(s->p.max_conns, sizeof(*s->cl));
	s->slots = calloc(s->p.depth, sizeof(*s->slots));
	if (!s->cl || !s->slots ||
	    posix_memalign(&s->zeroes, 4096, s->p.piece_bytes))
		goto out_nomem;
	memset(s->zeroes, 0, s->p.piece_bytes);
	for (unsigned int i = 0; i < s->p.max_conns; i++) {
		s->cl[i].rx = malloc(RX_BYTES);
		if (!s->cl[i].rx)
			goto out_nomem;
	}
	for (unsigned int i = 0; i < s->p.depth; i++)
		s->slots[i].next = i + 1 < s->p.depth ? (int32_t)i + 1 : -1;
	s->free_slot = 0;
	return 0;

out_nomem:
	return util_why(-ENOMEM, why, wl, "nbd: out of memory");
}

struct nbd_server *nbd_start(const struct nbd_params *p, char *why,
			     size_t wl)
{
	struct path_params pp;
	struct nbd_server *s;
	char name[32];
	int ret;

	s = calloc(1, sizeof(*s));
	if (!s) {
		util_why(-ENOMEM, why, wl, "nbd: out of memory");
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&s->ready_lock, NULL);
	pthread_cond_init(&s->ready_cond, NULL);
	s->p = *p;
	s->lfd = -1;
	s->own_shared = (struct path_shared)PATH_SHARED_INIT;
	if (!s->p.max_conns)
		s->p.max_conns = NBD_MAX_CONNS;
	if (!s->p.depth)
		s->p.depth = NBD_DEPTH;
	if (!s->p.conn_depth)
		s->p.conn_depth = NBD_CONN_DEPTH;
	if (!s->p.hs_timeout_s)
		s->p.hs_timeout_s = NBD_HS_TIMEOUT_S;
	if (!s->p.max_payload)
		s->p.max_payload = NBDP_PAYLOAD_MAX;
	if (!s->p.zero_bytes)
		s->p.zero_bytes = s->p.piece_bytes;
	ret = -EINVAL;
	if (!p->listen || !p->meta || !p->eng ||
	    s->p.max_conns > 0xffff || s->p.depth > 0xffff) {
		util_why(ret, why, wl, "nbd: incomplete parameters");
		goto out_free;
	}
	ret = make_export(s, why, wl);
	if (!ret)
		ret = alloc_state(s, why, wl);
	if (ret)
		goto out_free;
	if (!strncmp(p->listen, "unix:", 5))
		ret = listen_unix(s, p->listen + 5, why, wl);
	else
		ret = listen_tcp(s, p->listen, why, wl);
	if (ret)
		goto out_free;

	snprintf(name, sizeof(name), "nbd %u", p->path_id);
	pp = (struct path_params){
		.id = p->path_id,
		.depth = s->p.depth,
		.buf_bytes = s->p.piece_bytes,
		.dev_sectors = p->size >> SECTOR_SHIFT,
		.eng = p->eng,
		.backing_fd = p->backing_fd,
		.backing_is_bdev = p->backing_is_bdev,
		.helper = p->helper,
		.meta = p->meta,
		.shared = p->shared ? p->shared : &s->own_shared,
		.complete = nbd_on_path_done,
		.owner = s,
		.name = name,
	};
	s->path = path_create(&pp);
	if (!s->path) {
		ret = util_why(-errno, why, wl, "nbd: data path: %s",
			       strerror(errno));
		goto out_free;
	}
	ret = -pthread_create(&s->thread, NULL, nbd_main, s);
	if (ret) {
		util_why(ret, why, wl, "nbd: thread: %s", strerror(-ret));
		goto out_free;
	}
	pthread_mutex_lock(&s->ready_lock);
	while (!s->ready_done)
		pthread_cond_wait(&s->ready_cond, &s->ready_lock);
	ret = s->ready_err;
	pthread_mutex_unlock(&s->ready_lock);
	if (ret) {
		pthread_join(s->thread, NULL);
		util_why(ret, why, wl, "nbd: starting the server thread: %s",
			 strerror(-ret));
		goto out_free;
	}
	log_notice("nbd: exporting %s (%llu bytes) on %s", s->name,
		   (unsigned long long)p->size, s->addr);
	return s;

out_free:
	nbd_free(s);
	errno = -ret;
	return NULL;
}

void nbd_stop(struct nbd_server *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	path_kick(s->path);
	pthread_join(s->thread, NULL);
	log_notice("nbd: %s no longer exported on %s", s->name, s->addr);
	nbd_free(s);
}

const char *nbd_address(const struct nbd_server *s)
{
	return s->addr;
}

void nbd_get_stats(const struct nbd_server *s, struct nbd_stats *st)
{
	const uint64_t *src = (const uint64_t *)&s->st;
	uint64_t *dst = (uint64_t *)st;

	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

void nbd_status(const struct nbd_server *s, json_t *o)
{
	struct nbd_stats st;
	struct path_stats ps;
	json_t *io;

	nbd_get_stats(s, &st);
	path_get_stats(s->path, &ps);
	json_object_set_new(o, "address", json_string(s->addr));
	json_object_set_new(o, "export", json_string(s->name));
#define J(obj, src, f) \
	json_object_set_new(obj, #f, json_integer((json_int_t)(src).f))
	J(o, st, clients);
	J(o, st, accepted);
	J(o, st, refused);
	J(o, st, handshakes);
	J(o, st, dropped);
	J(o, st, requests);
	J(o, st, invalid);
	J(o, st, io_errors);
	io = json_object();
	J(io, ps, reads);
	J(io, ps, writes);
	J(io, ps, read_bytes);
	J(io, ps, write_bytes);
	J(io, ps, flushes);
	J(io, ps, flushes_elided);
	J(io, ps, fua_writes);
	J(io, ps, discards);
	J(io, ps, write_zeroes);
	J(io, ps, errors);
	J(io, ps, al_waits);
#undef J
	json_object_set_new(o, "io", io);
}
