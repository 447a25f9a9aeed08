// Shared by pm-pages and pm-page-source: an open-addressing map of non-zero 64-bit keys (page hashes, or
// page addresses) to 64-bit values (file offsets, hashes). Keys are never 0: 0 marks an empty slot.
#ifndef PM_PAGESET_H
#define PM_PAGESET_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Bound on entries per set: 64 Mi pages = 256 GiB. */
#define PAGESET_MAX (64UL << 20)

struct set {
	uint64_t *keys;
	uint64_t *vals;
	size_t cap, len;
};

/* 0, or -1 with errno set (ENOMEM). */
static inline int set_init(struct set *s, size_t expect)
{
	s->cap = 1024;
	while (s->cap < expect * 2)
		s->cap <<= 1;
	s->keys = calloc(s->cap, sizeof(uint64_t));
	s->vals = calloc(s->cap, sizeof(uint64_t));
	s->len = 0;
	if (!s->keys || !s->vals) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

static inline size_t set_slot(const struct set *s, uint64_t k)
{
	size_t i = (size_t)(k * 0x9e3779b97f4a7c15ULL) & (s->cap - 1);
	while (s->keys[i] && s->keys[i] != k)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static inline int set_has(const struct set *s, uint64_t k, uint64_t *val)
{
	size_t i = set_slot(s, k);
	if (!s->keys[i])
		return 0;
	if (val)
		*val = s->vals[i];
	return 1;
}

/* Adds k (keeping an existing value; `set_put` replaces it). 0, or -1 with errno set (ENOMEM, E2BIG). */
static inline int set_insert(struct set *s, uint64_t k, uint64_t val, int replace)
{
	if ((s->len + 1) * 2 > s->cap) {
		struct set bigger;
		if (set_init(&bigger, s->cap))
			return -1;
		for (size_t i = 0; i < s->cap; i++)
			if (s->keys[i])
				set_insert(&bigger, s->keys[i], s->vals[i], 1);
		free(s->keys);
		free(s->vals);
		*s = bigger;
	}
	if (s->len >= PAGESET_MAX) {
		errno = E2BIG;
		return -1;
	}
	size_t i = set_slot(s, k);
	if (!s->keys[i]) {
		s->keys[i] = k;
		s->vals[i] = val;
		s->len++;
	} else if (replace) {
		s->vals[i] = val;
	}
	return 0;
}

/* The key of one page of one process of a pod: its pid inside the pod and its page number (never 0). */
static inline uint64_t page_key(uint32_t vpid, uint64_t vaddr)
{
	return ((uint64_t)vpid << 40 | (vaddr >> 12)) + 1;
}

#endif
