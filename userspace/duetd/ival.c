// SPDX-License-Identifier: MIT
/* The set of sector ranges in flight (see ival.h). */
#include <errno.h>
#include <stdlib.h>

#include "ival.h"

struct ival {
	uint64_t start;
	uint64_t end;		/* exclusive; 0 = free slot */
};

struct ival_set {
	uint32_t max;
	uint32_t count;
	uint32_t hi;		/* slots [0, hi) may be in use */
	uint32_t nr_free;
	uint32_t *free;		/* stack of free slots below hi */
	struct ival *v;
};

struct ival_set *ival_create(uint32_t max)
{
	struct ival_set *s;

	if (!max) {
		errno = EINVAL;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->max = max;
	s->v = calloc(max, sizeof(*s->v));
	s->free = calloc(max, sizeof(*s->free));
	if (!s->v || !s->free) {
		ival_free(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

void ival_free(struct ival_set *s)
{
	if (!s)
		return;
	free(s->v);
	free(s->free);
	free(s);
}

bool ival_overlaps(const struct ival_set *s, uint64_t sector, uint64_t nr)
{
	uint64_t end = sector + nr;

	if (!s->count)
		return false;
	for (uint32_t i = 0; i < s->hi; i++) {
		const struct ival *v = &s->v[i];

		if (v->end && v->start < end && sector < v->end)
			return true;
	}
	return false;
}

int ival_take(struct ival_set *s, uint64_t sector, uint64_t nr,
	      uint32_t *handle)
{
	uint32_t i;

	if (!nr || sector + nr < sector)
		return -EINVAL;
	if (ival_overlaps(s, sector, nr))
		return -EBUSY;
	if (s->nr_free)
		i = s->free[--s->nr_free];
	else if (s->hi < s->max)
		i = s->hi++;
	else
		return -ENOSPC;
	s->v[i].start = sector;
	s->v[i].end = sector + nr;
	s->count++;
	*handle = i;
	return 0;
}

void ival_put(struct ival_set *s, uint32_t handle)
{
	if (handle >= s->hi || !s->v[handle].end)
		return;
	s->v[handle].end = 0;
	s->count--;
	/* shrink the scanned prefix when the top slots are free */
	if (handle + 1 == s->hi) {
		s->hi--;
		while (s->hi && !s->v[s->hi - 1].end) {
			s->hi--;
			/* drop that slot from the free stack */
			for (uint32_t k = 0; k < s->nr_free; k++) {
				if (s->free[k] == s->hi) {
					s->free[k] = s->free[--s->nr_free];
					break;
				}
			}
		}
	} else {
		s->free[s->nr_free++] = handle;
	}
}

uint32_t ival_count(const struct ival_set *s)
{
	return s->count;
}
