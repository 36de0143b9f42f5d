// SPDX-License-Identifier: MIT
/*
 * TEST ONLY: the fault-injecting engine decorator (eng_fault.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eng_fault.h"
#include "log.h"
#include "util.h"

/* A wrapper: the ops a path uses, and the engine they forward to. */
struct fault_ops {
	struct eng_ops ops;
	const struct eng_ops *inner;
};

static struct {
	bool on;
	struct eng_fault_spec spec;
	uint64_t seen;		/* atomic: matching operations so far */
	uint64_t injected;	/* atomic: failed on purpose */
} fault;

static const struct eng_ops *inner_of(const struct eng_queue *eq)
{
	return ((const struct fault_ops *)eq->ops)->inner;
}

static int parse_range(const char *v, struct eng_fault_spec *spec)
{
	char *plus = strchr(v, '+');
	char first[32];
	size_t n;

	if (!plus || plus == v)
		return -EINVAL;
	n = (size_t)(plus - v);
	if (n >= sizeof(first))
		return -EINVAL;
	memcpy(first, v, n);
	first[n] = '\0';
	if (util_parse_u64(first, 0, UINT64_MAX >> 10, &spec->sector) ||
	    util_parse_u64(plus + 1, 1, UINT64_MAX >> 10, &spec->nr))
		return -EINVAL;
	spec->ranged = true;
	return 0;
}

int eng_fault_parse(const char *s, struct eng_fault_spec *spec, char *why,
		    size_t why_len)
{
	char buf[512], *save = NULL, *kv;

	memset(spec, 0, sizeof(*spec));
	spec->reads = spec->writes = true;
	if (strlen(s) >= sizeof(buf))
		return util_why(-EINVAL, why, why_len, "%s is too long",
				ENG_FAULT_ENV);
	strcpy(buf, s);
	for (kv = strtok_r(buf, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');

		if (!v)
			return util_why(-EINVAL, why, why_len,
					"%s: '%s' is not KEY=VALUE",
					ENG_FAULT_ENV, kv);
		*v++ = '\0';
		if (!strcmp(kv, "after")) {
			if (util_parse_u64(v, 0, UINT64_MAX, &spec->after))
				return util_why(-EINVAL, why, why_len,
						"%s: after=%s is not a count",
						ENG_FAULT_ENV, v);
		} else if (!strcmp(kv, "file")) {
			if (v[0] != '/' || strlen(v) >= sizeof(spec->file))
				return util_why(-EINVAL, why, why_len,
						"%s: file= needs an absolute path under %zu bytes",
						ENG_FAULT_ENV, sizeof(spec->file));
			strcpy(spec->file, v);
		} else if (!strcmp(kv, "ops")) {
			spec->reads = !strcmp(v, "all") || !strcmp(v, "read");
			spec->writes = !strcmp(v, "all") || !strcmp(v, "write");
			if (!spec->reads && !spec->writes)
				return util_why(-EINVAL, why, why_len,
						"%s: ops=%s: want all, read or write",
						ENG_FAULT_ENV, v);
		} else if (!strcmp(kv, "sectors")) {
			if (parse_range(v, spec))
				return util_why(-EINVAL, why, why_len,
						"%s: sectors=%s: want START+COUNT (sectors, COUNT > 0)",
						ENG_FAULT_ENV, v);
		} else {
			return util_why(-EINVAL, why, why_len,
					"%s: unknown key '%s' (after, file, ops, sectors)",
					ENG_FAULT_ENV, kv);
		}
	}
	return 0;
}

bool eng_fault_matches(const struct eng_fault_spec *spec, unsigned int op,
		       uint64_t sector, uint64_t nr)
{
	if (op == ENG_OP_READ ? !spec->reads : !spec->writes)
		return false;
	if (!spec->ranged)
		return true;
	if (op == ENG_OP_FLUSH)
		return false;
	return sector < spec->sector + spec->nr && spec->sector < sector + nr;
}

/* Fail @rq? Counts the matching operations. */
static const char *op_name(unsigned int op)
{
	static const char *const names[] = {
		[ENG_OP_READ] = "read",
		[ENG_OP_WRITE] = "write",
		[ENG_OP_FLUSH] = "flush",
		[ENG_OP_DISCARD] = "discard",
		[ENG_OP_WRITE_ZEROES] = "write-zeroes",
	};

	return op < sizeof(names) / sizeof(names[0]) ? names[op] : "?";
}

static bool should_fail(const struct eng_req *rq)
{
	uint64_t n;

	if (!eng_fault_matches(&fault.spec, rq->op, rq->off >> SECTOR_SHIFT,
			       rq->len >> SECTOR_SHIFT))
		return false;
	if (fault.spec.file[0] && access(fault.spec.file, F_OK))
		return false;
	n = __atomic_add_fetch(&fault.seen, 1, __ATOMIC_RELAXED);
	return n > fault.spec.after;
}

static int f_init(struct eng_queue *eq)
{
	return inner_of(eq)->init(eq);
}

static void f_exit(struct eng_queue *eq)
{
	inner_of(eq)->exit(eq);
}

static int f_submit(struct eng_queue *eq, struct eng_req *rq)
{
	if (should_fail(rq)) {
		uint64_t n = __atomic_add_fetch(&fault.injected, 1,
						__ATOMIC_RELAXED);

		if (n <= 3)
			log_warn("TEST fault injection (%s): failing %s at byte %llu+%u with EIO",
				 ENG_FAULT_ENV, op_name(rq->op),
				 (unsigned long long)rq->off, rq->len);
		return -EIO;
	}
	return inner_of(eq)->submit(eq, rq);
}

static void f_flush(struct eng_queue *eq)
{
	const struct eng_ops *in = inner_of(eq);

	if (in->flush)
		in->flush(eq);
}

static void f_cqe(struct eng_queue *eq, const struct io_uring_cqe *cqe)
{
	inner_of(eq)->cqe(eq, cqe);
}

#define FAULT_OPS(nm, in) \
	{ .ops = { .name = nm, .init = f_init, .exit = f_exit, \
		   .submit = f_submit, .flush = f_flush, .cqe = f_cqe }, \
	  .inner = in }

static const struct fault_ops fault_uring = FAULT_OPS("io_uring+fault",
						      &eng_uring_ops);
static const struct fault_ops fault_aio = FAULT_OPS("libaio+fault",
						    &eng_aio_ops);

int eng_fault_setup(char *why, size_t why_len)
{
	const char *v = getenv(ENG_FAULT_ENV);
	struct eng_fault_spec spec;
	int ret;

	fault.on = false;
	if (!v || !*v)
		return 0;
	ret = eng_fault_parse(v, &spec, why, why_len);
	if (ret)
		return ret;
	fault.spec = spec;
	fault.seen = 0;
	fault.on = true;
	log_warn("TEST ONLY: %s=%s: backing I/O will fail on purpose", ENG_FAULT_ENV,
		 v);
	return 0;
}

const struct eng_ops *eng_fault_wrap(const struct eng_ops *inner)
{
	if (!fault.on || !inner)
		return inner;
	if (inner == &eng_uring_ops)
		return &fault_uring.ops;
	if (inner == &eng_aio_ops)
		return &fault_aio.ops;
	return inner;
}

uint64_t eng_fault_injected(void)
{
	return __atomic_load_n(&fault.injected, __ATOMIC_RELAXED);
}
