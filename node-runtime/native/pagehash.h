// Shared by pm-memscan and pm-pages: one page hash (so a scan and a pre-copy agree) and a monotonic clock.
#ifndef PM_PAGEHASH_H
#define PM_PAGEHASH_H

#include <stdint.h>
#include <time.h>

#define PAGE 4096UL

static inline uint64_t pagehash_mix(uint64_t h, uint64_t w)
{
	uint64_t k = w * 0xbf58476d1ce4e5b9ULL;
	k ^= k >> 31;
	return (h ^ k) * 0x94d049bb133111ebULL;
}

// A fast 64-bit hash of one page, 8 bytes at a time (multiply-xorshift mixing): collisions only make a
// changed page look clean with probability ~2^-64, and speed matters (it runs over all of a pod's memory,
// and over every page a freeze dumps). Four lanes, each word i into lane i % 4, then the lanes into one: a
// single lane waits on its multiply for every word, four keep the multiplier busy (about twice as fast).
// Never 0: callers use 0 for "no page".
static inline uint64_t hash_page(const unsigned char *p)
{
	const uint64_t *w = (const uint64_t *)p;
	uint64_t a = 0x9e3779b97f4a7c15ULL, b = a + 1, c = a + 2, d = a + 3;
	for (unsigned i = 0; i < PAGE / 8; i += 4) {
		a = pagehash_mix(a, w[i]);
		b = pagehash_mix(b, w[i + 1]);
		c = pagehash_mix(c, w[i + 2]);
		d = pagehash_mix(d, w[i + 3]);
	}
	uint64_t h = pagehash_mix(pagehash_mix(pagehash_mix(a, b), c), d);
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
