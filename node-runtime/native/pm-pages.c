// pm-pages: pre-copy by content. Pages travel before the freeze; at the freeze only pages the destination
// does not already hold travel, the rest by reference. No soft-dirty tracking is needed (this kernel has none).
//
//   pm-pages round  --pid PID --state FILE --out FILE
//       Reads every private writable page of the pod (every process of PID's pid namespace, with
//       process_vm_readv: the pod keeps running) and writes each page whose hash is not in STATE as a record
//       [u64 hash][4096 bytes] to OUT; adds those hashes to STATE (the set the destination holds).
//   pm-pages encode --dir IMAGES --state FILE
//       For each CRIU pages-*.img in IMAGES: replaces it by pages-*.img.pmdelta, a stream of
//       [u8 0][u64 hash] for pages in STATE and [u8 1][u64 hash][4096 bytes] for the others.
//   pm-pages decode --dir IMAGES --cache FILE...
//       Rebuilds every pages-*.img from its .pmdelta and the records of the cache files (round outputs).
// Each prints one JSON line; errors are one line on stderr, exit 1 (2 for usage).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pagehash.h"
#include "pidns.h"

#define CHUNK (256 * PAGE)
/* Bound on pages per pod and per set: 64 Mi pages = 256 GiB. */
#define MAX_PAGES (64UL << 20)

static void die(const char *what)
{
	fprintf(stderr, "pm-pages: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

/* An open-addressing set (or map hash -> file offset) of page hashes. */
struct set {
	uint64_t *keys;
	uint64_t *vals;
	size_t cap, len;
};

static void set_init(struct set *s, size_t expect)
{
	s->cap = 1024;
	while (s->cap < expect * 2)
		s->cap <<= 1;
	s->keys = calloc(s->cap, sizeof(uint64_t));
	s->vals = calloc(s->cap, sizeof(uint64_t));
	s->len = 0;
	if (!s->keys || !s->vals)
		die("out of memory");
}

static size_t slot(const struct set *s, uint64_t k)
{
	size_t i = (size_t)(k * 0x9e3779b97f4a7c15ULL) & (s->cap - 1);
	while (s->keys[i] && s->keys[i] != k)
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int set_has(const struct set *s, uint64_t k, uint64_t *val)
{
	size_t i = slot(s, k);
	if (!s->keys[i])
		return 0;
	if (val)
		*val = s->vals[i];
	return 1;
}

static void set_add(struct set *s, uint64_t k, uint64_t val)
{
	if ((s->len + 1) * 2 > s->cap) {
		struct set bigger;
		set_init(&bigger, s->cap);
		for (size_t i = 0; i < s->cap; i++)
			if (s->keys[i])
				set_add(&bigger, s->keys[i], s->vals[i]);
		free(s->keys);
		free(s->vals);
		*s = bigger;
	}
	if (s->len >= MAX_PAGES) {
		errno = E2BIG;
		die("page set");
	}
	size_t i = slot(s, k);
	if (!s->keys[i]) {
		s->keys[i] = k;
		s->vals[i] = val;
		s->len++;
	}
}

static void set_load(struct set *s, const char *file)
{
	set_init(s, 1 << 16);
	FILE *f = fopen(file, "r");
	if (!f)
		return; /* first round: nothing sent yet */
	uint64_t k;
	while (fread(&k, sizeof(k), 1, f) == 1)
		set_add(s, k, 0);
	fclose(f);
}

static void set_save(const struct set *s, const char *file)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die(tmp);
	for (size_t i = 0; i < s->cap; i++)
		if (s->keys[i] && fwrite(&s->keys[i], sizeof(uint64_t), 1, f) != 1)
			die(tmp);
	if (fclose(f) || rename(tmp, file))
		die(file);
}

static void write_all(FILE *f, const void *p, size_t n, const char *what)
{
	if (fwrite(p, 1, n, f) != n)
		die(what);
}

/* ---- round ---- */

struct round_ctx {
	struct set *sent;
	FILE *out;
	unsigned char *buf;
	unsigned long pages, fresh;
};

static void round_pid(int pid, void *arg)
{
	struct round_ctx *c = arg;
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	if (!maps)
		return;
	while (fgets(line, sizeof(line), maps)) {
		unsigned long start, end;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3 || perms[1] != 'w' || perms[3] != 'p' ||
		    strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall"))
			continue;
		for (unsigned long a = start; a < end; a += CHUNK) {
			size_t len = end - a < CHUNK ? end - a : CHUNK;
			struct iovec local = { c->buf, len }, remote = { (void *)a, len };
			ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
			for (size_t off = 0; got > 0 && off + PAGE <= (size_t)got; off += PAGE) {
				uint64_t h = hash_page(c->buf + off);
				c->pages++;
				if (set_has(c->sent, h, NULL))
					continue;
				set_add(c->sent, h, 0);
				write_all(c->out, &h, sizeof(h), "round output");
				write_all(c->out, c->buf + off, PAGE, "round output");
				c->fresh++;
			}
		}
	}
	fclose(maps);
}

static int cmd_round(int pid, const char *state, const char *out)
{
	struct set sent;
	set_load(&sent, state);
	struct round_ctx c = { &sent, fopen(out, "w"), aligned_alloc(PAGE, CHUNK), 0, 0 };
	if (!c.out)
		die(out);
	if (!c.buf)
		die("out of memory");
	double t0 = now_ms();
	errno = 0;
	if (for_each_pid_in_ns(pid, round_pid, &c))
		die("the pod's pid namespace");
	if (fclose(c.out))
		die(out);
	set_save(&sent, state);
	printf("{\"pages\":%lu,\"newPages\":%lu,\"bytes\":%lu,\"knownPages\":%zu,\"ms\":%.1f}\n", c.pages, c.fresh,
	       c.fresh * (PAGE + 8), sent.len, now_ms() - t0);
	return 0;
}

/* ---- encode / decode ---- */

static int is_pages_img(const char *name)
{
	size_t n = strlen(name);
	return !strncmp(name, "pages-", 6) && n > 10 && !strcmp(name + n - 4, ".img");
}

static int cmd_encode(const char *dir, const char *state)
{
	struct set sent;
	set_load(&sent, state);
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	unsigned char page[PAGE];
	unsigned long pages = 0, refs = 0;
	double t0 = now_ms();
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!is_pages_img(e->d_name))
			continue;
		char in[4096], out[4200];
		snprintf(in, sizeof(in), "%s/%s", dir, e->d_name);
		snprintf(out, sizeof(out), "%s.pmdelta", in);
		FILE *fi = fopen(in, "r"), *fo = fopen(out, "w");
		if (!fi || !fo)
			die(in);
		static char ibuf[1 << 20], obuf[1 << 20];
		setvbuf(fi, ibuf, _IOFBF, sizeof(ibuf));
		setvbuf(fo, obuf, _IOFBF, sizeof(obuf));
		while (fread(page, PAGE, 1, fi) == 1) {
			uint64_t h = hash_page(page);
			unsigned char known = set_has(&sent, h, NULL) ? 0 : 1;
			write_all(fo, &known, 1, out);
			write_all(fo, &h, sizeof(h), out);
			if (known)
				write_all(fo, page, PAGE, out);
			else
				refs++;
			pages++;
		}
		if (fclose(fi) || fclose(fo) || unlink(in))
			die(out);
	}
	closedir(d);
	printf("{\"pages\":%lu,\"referenced\":%lu,\"literal\":%lu,\"ms\":%.1f}\n", pages, refs, pages - refs, now_ms() - t0);
	return 0;
}

static int cmd_decode(const char *dir, char **caches, int ncaches)
{
	double t0 = now_ms();
	struct set index;
	set_init(&index, 1 << 16);
	/* The caches are mapped, not read page by page: rebuilding a checkpoint is then memory copies only. */
	const unsigned char **maps = calloc(ncaches, sizeof(*maps));
	if (!maps)
		die("out of memory");
	/* Index: hash -> (cache number << 48 | offset of the page). */
	for (int i = 0; i < ncaches; i++) {
		int fd = open(caches[i], O_RDONLY);
		struct stat st;
		if (fd < 0 || fstat(fd, &st))
			die(caches[i]);
		size_t len = (size_t)st.st_size;
		maps[i] = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
		close(fd);
		if (len && maps[i] == MAP_FAILED)
			die(caches[i]);
		for (size_t off = 0; off + sizeof(uint64_t) + PAGE <= len; off += sizeof(uint64_t) + PAGE) {
			uint64_t h;
			memcpy(&h, maps[i] + off, sizeof(h));
			set_add(&index, h, ((uint64_t)i << 48) | (off + sizeof(h)));
		}
	}
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	unsigned char page[PAGE];
	unsigned long pages = 0, fromCache = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 9 || strcmp(e->d_name + n - 8, ".pmdelta"))
			continue;
		char in[4096], out[4096];
		snprintf(in, sizeof(in), "%s/%s", dir, e->d_name);
		snprintf(out, sizeof(out), "%s/%.*s", dir, (int)(n - 8), e->d_name);
		FILE *fi = fopen(in, "r"), *fo = fopen(out, "w");
		if (!fi || !fo)
			die(in);
		static char obuf[1 << 20];
		setvbuf(fo, obuf, _IOFBF, sizeof(obuf));
		unsigned char literal;
		uint64_t h, where;
		while (fread(&literal, 1, 1, fi) == 1) {
			if (fread(&h, sizeof(h), 1, fi) != 1)
				die("truncated delta");
			if (literal) {
				if (fread(page, PAGE, 1, fi) != 1)
					die("truncated delta");
			} else {
				if (!set_has(&index, h, &where)) {
					errno = ENOENT;
					die("a referenced page is not in the page cache");
				}
				memcpy(page, maps[where >> 48] + (where & ((1ULL << 48) - 1)), PAGE);
				if (hash_page(page) != h) {
					errno = EIO;
					die("page cache entry does not match its hash");
				}
				fromCache++;
			}
			write_all(fo, page, PAGE, out);
			pages++;
		}
		if (fclose(fi) || fclose(fo) || unlink(in))
			die(out);
	}
	closedir(d);
	printf("{\"pages\":%lu,\"fromCache\":%lu,\"ms\":%.1f}\n", pages, fromCache, now_ms() - t0);
	return 0;
}

static const char *opt(int argc, char **argv, const char *name)
{
	for (int i = 2; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return NULL;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	if (!strcmp(cmd, "round") && opt(argc, argv, "--pid") && opt(argc, argv, "--state") && opt(argc, argv, "--out"))
		return cmd_round(atoi(opt(argc, argv, "--pid")), opt(argc, argv, "--state"), opt(argc, argv, "--out"));
	if (!strcmp(cmd, "encode") && opt(argc, argv, "--dir") && opt(argc, argv, "--state"))
		return cmd_encode(opt(argc, argv, "--dir"), opt(argc, argv, "--state"));
	if (!strcmp(cmd, "decode") && opt(argc, argv, "--dir") && argc >= 6 && !strcmp(argv[4], "--cache"))
		return cmd_decode(opt(argc, argv, "--dir"), argv + 5, argc - 5);
	fprintf(stderr, "usage: pm-pages round --pid PID --state F --out F | encode --dir D --state F | decode --dir D --cache F...\n");
	return 2;
}
