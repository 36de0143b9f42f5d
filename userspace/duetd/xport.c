// SPDX-License-Identifier: MIT
/*
 * Transport registry, address helpers and the receive buffer pool shared
 * by every transport (see xport.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "xport.h"
#include "xport_rdma.h"

#define XPORT_REGISTERED_MAX 4

static const struct xport_ops *const builtin[] = { &xport_tcp_ops,
						     &xport_rdma_ops };

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static const struct xport_ops *registered[XPORT_REGISTERED_MAX];

static const struct xport_ops *find_locked(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(builtin); i++)
		if (!strcmp(builtin[i]->name, name))
			return builtin[i];
	for (size_t i = 0; i < ARRAY_SIZE(registered); i++)
		if (registered[i] && !strcmp(registered[i]->name, name))
			return registered[i];
	return NULL;
}

int xport_register(const struct xport_ops *ops)
{
	int ret = -ENOSPC;

	pthread_mutex_lock(&reg_lock);
	if (find_locked(ops->name)) {
		ret = -EEXIST;
		goto out_unlock;
	}
	for (size_t i = 0; i < ARRAY_SIZE(registered); i++) {
		if (!registered[i]) {
			registered[i] = ops;
			ret = 0;
			break;
		}
	}
out_unlock:
	pthread_mutex_unlock(&reg_lock);
	return ret;
}

const struct xport_ops *xport_find(const char *name)
{
	const struct xport_ops *ops;

	pthread_mutex_lock(&reg_lock);
	ops = find_locked(name);
	pthread_mutex_unlock(&reg_lock);
	return ops;
}

void xport_set_error(struct xport_ep *ep, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ep->err, sizeof(ep->err), fmt, ap);
	va_end(ap);
}

int xport_split_addr(const char *addr, char *host, size_t host_len,
		     char *port, size_t port_len, char *err, size_t err_len)
{
	const char *h = addr, *colon;
	size_t hlen;

	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (!close || close[1] != ':') {
			snprintf(err, err_len,
				 "\"%s\": expected \"[IPv6]:port\"", addr);
			return -EINVAL;
		}
		h = addr + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || memchr(addr, ':', (size_t)(colon - addr))) {
			snprintf(err, err_len,
				 "\"%s\": expected \"host:port\" (IPv6 addresses need brackets)",
				 addr);
			return -EINVAL;
		}
		hlen = (size_t)(colon - addr);
	}
	if (hlen >= host_len || strlen(colon + 1) >= port_len ||
	    !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
		snprintf(err, err_len, "\"%s\": bad host or port", addr);
		return -EINVAL;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

int xport_resolve(const char *addr, bool passive, struct addrinfo **res,
		  char *err, size_t err_len)
{
	struct addrinfo hints = {
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	char host[XPORT_ADDR_MAX], port[8];
	int r;

	r = xport_split_addr(addr, host, sizeof(host), port, sizeof(port), err,
			     err_len);
	if (r)
		return r;
	r = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
	if (r) {
		snprintf(err, err_len, "cannot resolve \"%s\": %s", addr,
			 gai_strerror(r));
		return r == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
	}
	return 0;
}

const char *xport_fmt_sockaddr(const struct sockaddr *sa, char *buf,
			       size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	buf[0] = '\0';
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)sa;

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
	}
	return buf;
}

/*
 * The pool. Size classes are powers of two so that a cached buffer fits
 * any later payload of its class, and the cache cannot fragment the
 * budget: when a get needs room, cached buffers of other classes are
 * freed first.
 */
#define POOL_MIN_SHIFT 12	/* 4 KiB */
#define POOL_MAX_SHIFT 20	/* PROTO_PAYLOAD_MAX */
#define POOL_CLASSES (POOL_MAX_SHIFT - POOL_MIN_SHIFT + 1)
#define POOL_ALIGN 4096

_Static_assert((1u << POOL_MAX_SHIFT) == PROTO_PAYLOAD_MAX,
	       "largest class holds the largest payload");

struct xport_pool {
	pthread_mutex_t lock;
	size_t budget;
	size_t allocated;	/* bytes of data, in use + cached */
	size_t in_use;
	struct xport_buf *free[POOL_CLASSES];
	bool owner_gone;
	bool starved;		/* a get failed since the last wake */
	void (*wake)(void *arg);
	void *wake_arg;
};

struct xport_pool *xport_pool_new(size_t budget, void (*wake)(void *arg),
				  void *wake_arg)
{
	struct xport_pool *p;

	if (budget < 2 * (size_t)PROTO_PAYLOAD_MAX) {
		errno = EINVAL;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	p->budget = budget;
	p->wake = wake;
	p->wake_arg = wake_arg;
	return p;
}

static void buf_destroy(struct xport_pool *p, struct xport_buf *b)
{
	p->allocated -= b->cap;
	free(b->data);
	free(b);
}

static void pool_destroy(struct xport_pool *p)
{
	for (unsigned int c = 0; c < POOL_CLASSES; c++) {
		while (p->free[c]) {
			struct xport_buf *b = p->free[c];

			p->free[c] = b->next;
			buf_destroy(p, b);
		}
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void xport_pool_free(struct xport_pool *p)
{
	bool last;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->owner_gone = true;
	p->wake = NULL;
	last = !p->in_use;
	pthread_mutex_unlock(&p->lock);
	if (last)
		pool_destroy(p);
}

/* Free cached buffers until @need more bytes fit in the budget. */
static bool pool_make_room(struct xport_pool *p, size_t need)
{
	for (unsigned int c = POOL_CLASSES; c-- > 0;) {
		while (p->allocated + need > p->budget && p->free[c]) {
			struct xport_buf *b = p->free[c];

			p->free[c] = b->next;
			buf_destroy(p, b);
		}
	}
	return p->allocated + need <= p->budget;
}

struct xport_buf *xport_pool_get(struct xport_pool *p, size_t len)
{
	unsigned int cls = 0;
	struct xport_buf *b;
	size_t cap;
	void *data;

	if (!len || len > PROTO_PAYLOAD_MAX) {
		errno = EINVAL;
		return NULL;
	}
	while (((size_t)1 << (POOL_MIN_SHIFT + cls)) < len)
		cls++;
	cap = (size_t)1 << (POOL_MIN_SHIFT + cls);

	pthread_mutex_lock(&p->lock);
	b = p->free[cls];
	if (b) {
		p->free[cls] = b->next;
		goto out_got;
	}
	if (!pool_make_room(p, cap)) {
		p->starved = true;
		pthread_mutex_unlock(&p->lock);
		errno = EAGAIN;
		return NULL;
	}
	/* Reserve the bytes, then allocate without holding the lock. */
	p->allocated += cap;
	pthread_mutex_unlock(&p->lock);
	b = calloc(1, sizeof(*b));
	if (!b || posix_memalign(&data, POOL_ALIGN, cap)) {
		free(b);
		pthread_mutex_lock(&p->lock);
		p->allocated -= cap;
		pthread_mutex_unlock(&p->lock);
		errno = ENOMEM;
		return NULL;
	}
	b->data = data;
	b->cap = (uint32_t)cap;
	b->cls = cls;
	b->pool = p;
	pthread_mutex_lock(&p->lock);
out_got:
	p->in_use += b->cap;
	pthread_mutex_unlock(&p->lock);
	b->next = NULL;
	b->len = (uint32_t)len;
	return b;
}

void xport_buf_put(struct xport_buf *b)
{
	struct xport_pool *p;
	bool destroy;

	if (!b)
		return;
	p = b->pool;
	pthread_mutex_lock(&p->lock);
	p->in_use -= b->cap;
	b->next = p->free[b->cls];
	p->free[b->cls] = b;
	if (p->starved && p->wake) {
		p->starved = false;
		p->wake(p->wake_arg);
	}
	destroy = p->owner_gone && !p->in_use;
	pthread_mutex_unlock(&p->lock);
	if (destroy)
		pool_destroy(p);
}

void xport_pool_usage(struct xport_pool *p, size_t *allocated, size_t *in_use)
{
	pthread_mutex_lock(&p->lock);
	*allocated = p->allocated;
	*in_use = p->in_use;
	pthread_mutex_unlock(&p->lock);
}
