// Shared by pm-memscan and pm-pages: one page hash (so a scan and a pre-copy agree) and a monotonic clock.
#ifndef PM_PAGEHASH_H
#define PM_PAGEHASH_H

#include <stdint.h>
#include <time.h>

#define PAGE 4096UL

// A fast 64-bit hash of one page, 8 bytes at a time (multiply-xorshift mixing): collisions only make a
// changed page look clean with probability ~2^-64, and speed matters (it runs over all of a pod's memory).
// Never 0: callers use 0 for "no page".
static inline uint64_t hash_page(const unsigned char *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t h = 0x9e3779b97f4a7c15ULL;
	for (unsigned i = 0; i < PAGE / 8; i++) {
		uint64_t k = w[i] * 0xbf58476d1ce4e5b9ULL;
		k ^= k >> 31;
		h = (h ^ k) * 0x94d049bb133111ebULL;
	}
	h ^= h >> 29;
	return h ? h : 1;
}

static inline double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#endif
