// pm-pages: pre-copy by content. Pages travel before the freeze; at the freeze only pages the destination
// does not already hold travel, the rest by reference. No soft-dirty tracking is needed (this kernel has none).
//
//   pm-pages round  --pid PID --state FILE --out FILE [--map FILE --read FILE [--only FILE]]
//       Reads every private writable page of the pod (every process of PID's pid namespace, with
//       process_vm_readv: the pod keeps running), and all of its shared anonymous memory and the copied
//       pages of its read-only private mappings (by content only, never into MAP or READ), and writes each
//       page whose hash is not in STATE as a record [u64 hash][4096 bytes] to OUT; adds those hashes to STATE
//       (the set the destination holds).
//       When writes are tracked (pm-wptrack): MAP gets {u32 vpid, u32 0, u64 vaddr, u64 hash} for every page
//       read and READ the ranges read; with ONLY (ranges written since the last round), just those are read.
//   pm-pages final  --pid PID --read FILE --clean FILE --out FILE --round N
//       With the pod stopped after a lazy dump: writes to OUT, by address, every page of its private
//       anonymous memory that is not both clean (CLEAN: not written since the last round) and read by a round
//       (READ, every round's ranges), i.e. what the destination cannot take from the rounds.
//   pm-pages encode --dir IMAGES --state FILE [--watch]
//       For each CRIU pages-*.img in IMAGES: replaces it by pages-*.img.pmdelta (the image goes to
//       IMAGES/.encoded), a stream of [u8 0][u64 hash] for pages in STATE and [u8 1][u64 hash][4096 bytes]
//       for the others. With --watch, while CRIU dumps, each as soon as it is closed (commands on stdin: see
//       cmd_encode).
//   pm-pages decode --dir IMAGES (--cache FILE... | --serve)
//       Rebuilds every pages-*.img from its .pmdelta and the records of the cache files (round outputs);
//       with --serve, caches and deltas one at a time as they arrive (commands on stdin: see cmd_decode_serve).
//   pm-pages blocks --block N
//       A keyed hash of every N-byte block of each file named on stdin (see cmd_blocks): what a volume's
//       rounds compare to find the blocks that changed.
// Each prints one JSON line; errors are one line on stderr, exit 1 (2 for usage).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pagehash.h"
#include "uffdwp.h"
#include "pidns.h"
#include "pageset.h"

#define CHUNK (256 * PAGE)

static void die(const char *what)
{
	fprintf(stderr, "pm-pages: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

static void set_add(struct set *s, uint64_t k, uint64_t val)
{
	if (set_insert(s, k, val, 0))
		die("page set");
}

static void set_init_or_die(struct set *s, size_t expect)
{
	if (set_init(s, expect))
		die("page set");
}

static void set_load(struct set *s, const char *file)
{
	set_init_or_die(s, 1 << 16);
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

/* Ranges of a process's pages: {u32 vpid, u32 0, u64 start, u64 end} (pm-wptrack's files). */
struct page_range {
	uint32_t vpid, pad;
	uint64_t start, end;
};

struct round_ctx {
	struct set *sent;
	FILE *out;
	/* With --only: read just these ranges (written since the last round), not every mapping. */
	struct page_range *only;
	size_t nonly;
	/* With --map: {u32 vpid, u32 0, u64 vaddr, u64 hash} for every page read, and the ranges read. */
	FILE *map;
	FILE *read;
	struct page_range last; /* the range being extended, not yet written to `read` */
	unsigned char *buf;
	unsigned long pages, fresh;
	/* Of `pages`, those of private writable mappings (what a lazy dump leaves in the tasks). */
	unsigned long private_pages;
	unsigned long processes;
	/* Shared anonymous memory (SysV or MAP_SHARED|MAP_ANONYMOUS) already read, by inode and offset. */
	unsigned long seen[256][2];
	size_t nseen;
};

/* A page read this round: it goes to OUT (and STATE) unless the destination holds its content already. */
static void offer_page(struct round_ctx *c, uint64_t h, const unsigned char *page)
{
	if (set_has(c->sent, h, NULL))
		return;
	set_add(c->sent, h, 0);
	write_all(c->out, &h, sizeof(h), "round output");
	write_all(c->out, page, PAGE, "round output");
	c->fresh++;
}

/*
 * Shared anonymous memory: every round reads all of it (writes to it are not tracked), once per segment
 * however many processes map it, by content only: its pages go to OUT and STATE, never to MAP or READ (the
 * lazy restore serves private memory; CRIU dumps shared memory into the images, which `encode` turns into
 * references to what the rounds delivered).
 */
static void round_shared(int pid, struct round_ctx *c)
{
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	if (!maps)
		return;
	while (fgets(line, sizeof(line), maps)) {
		unsigned long start, end, offset, inode;
		char perms[8], dev[16];
		int at = 0;
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &start, &end, perms, &offset, dev, &inode, &at) < 6 || perms[1] != 'w' ||
		    perms[3] != 's' || !(strstr(line + at, "/dev/zero (deleted)") || strstr(line + at, "/SYSV")))
			continue;
		size_t k = 0;
		while (k < c->nseen && !(c->seen[k][0] == inode && c->seen[k][1] == offset))
			k++;
		if (k < c->nseen)
			continue;
		if (c->nseen < sizeof(c->seen) / sizeof(c->seen[0])) {
			c->seen[c->nseen][0] = inode;
			c->seen[c->nseen][1] = offset;
			c->nseen++;
		}
		for (unsigned long a = start; a < end; a += CHUNK) {
			size_t len = end - a < CHUNK ? end - a : CHUNK;
			struct iovec local = { c->buf, len }, remote = { (void *)a, len };
			ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
			for (size_t off = 0; got > 0 && off + PAGE <= (size_t)got; off += PAGE) {
				uint64_t h = hash_page(c->buf + off);
				c->pages++;
				offer_page(c, h, c->buf + off);
			}
		}
	}
	fclose(maps);
}

/*
 * A read-only private mapping's pages that are no longer the file's (a library's RELRO, written once by the
 * loader, then protected): CRIU dumps them into the images like shared memory, a few hundred per process.
 * A full round reads them, by content only (PAGEMAP_SCAN: present and not file-backed); they do not change,
 * so the freeze's `encode` sends them as references.
 */
static void round_copied_ro(int pagemap, int pid, unsigned long start, unsigned long end, struct round_ctx *c)
{
	static struct page_region vec[256];
	while (pagemap >= 0 && start < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .start = start, .end = end, .vec = (uintptr_t)vec, .vec_len = 256,
			.category_inverted = PAGE_IS_FILE, .category_mask = PAGE_IS_PRESENT | PAGE_IS_FILE, .return_mask = PAGE_IS_PRESENT,
		};
		long n = ioctl(pagemap, PAGEMAP_SCAN, &a);
		if (n < 0)
			return;
		for (long i = 0; i < n; i++)
			for (uint64_t r = vec[i].start; r < vec[i].end; r += CHUNK) {
				size_t len = vec[i].end - r < CHUNK ? vec[i].end - r : CHUNK;
				struct iovec local = { c->buf, len }, remote = { (void *)r, len };
				ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
				for (size_t off = 0; got > 0 && off + PAGE <= (size_t)got; off += PAGE) {
					c->pages++;
					offer_page(c, hash_page(c->buf + off), c->buf + off);
				}
			}
		if (a.walk_end <= start)
			break;
		start = a.walk_end;
	}
}

static void round_pid(int pid, void *arg)
{
	struct round_ctx *c = arg;
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	int vpid = c->map || c->only ? pod_pid(pid) : 0;
	if (!maps || vpid < 0) {
		if (maps)
			fclose(maps);
		return;
	}
	c->processes++;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	int pagemap = c->only ? -1 : open(path, O_RDONLY | O_CLOEXEC);
	size_t next = 0;
	while (1) {
		unsigned long start, end;
		if (c->only) {
			while (next < c->nonly && c->only[next].vpid != (uint32_t)vpid)
				next++;
			if (next == c->nonly)
				break;
			start = c->only[next].start;
			end = c->only[next].end;
			next++;
		} else {
			char perms[8];
			if (!fgets(line, sizeof(line), maps))
				break;
			if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3 || perms[3] != 'p' || strstr(line, "[vvar") ||
			    strstr(line, "[vsyscall"))
				continue;
			if (perms[1] != 'w') {
				if (perms[0] == 'r')
					round_copied_ro(pagemap, pid, start, end, c);
				continue;
			}
			if (strstr(line, "[vdso"))
				continue;
		}
		for (unsigned long a = start; a < end; a += CHUNK) {
			size_t len = end - a < CHUNK ? end - a : CHUNK;
			struct iovec local = { c->buf, len }, remote = { (void *)a, len };
			ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
			if (c->read && got >= (ssize_t)PAGE) {
				uint64_t to = a + ((uint64_t)got & ~(PAGE - 1));
				if (c->last.end == a && c->last.vpid == (uint32_t)vpid) {
					c->last.end = to;
				} else {
					if (c->last.end)
						write_all(c->read, &c->last, sizeof(c->last), "read ranges");
					c->last = (struct page_range){ (uint32_t)vpid, 0, a, to };
				}
			}
			for (size_t off = 0; got > 0 && off + PAGE <= (size_t)got; off += PAGE) {
				uint64_t h = hash_page(c->buf + off);
				c->pages++;
				c->private_pages++;
				if (c->map) {
					uint32_t head[2] = { (uint32_t)vpid, 0 };
					uint64_t rec[2] = { a + off, h };
					write_all(c->map, head, sizeof(head), "round map");
					write_all(c->map, rec, sizeof(rec), "round map");
				}
				offer_page(c, h, c->buf + off);
			}
		}
	}
	fclose(maps);
	if (pagemap >= 0)
		close(pagemap);
	round_shared(pid, c);
}

static struct page_range *load_ranges(const char *file, size_t *n)
{
	FILE *f = fopen(file, "r");
	if (!f)
		die(file);
	size_t cap = 1024;
	struct page_range *r = malloc(cap * sizeof(*r));
	*n = 0;
	while (r && fread(&r[*n], sizeof(*r), 1, f) == 1)
		if (++*n == cap)
			r = realloc(r, (cap *= 2) * sizeof(*r));
	fclose(f);
	if (!r)
		die("out of memory");
	return r;
}

static int cmd_round(int pid, const char *state, const char *out, const char *map, const char *only, const char *read)
{
	struct set sent;
	set_load(&sent, state);
	struct round_ctx c = { &sent, fopen(out, "w"), NULL, 0, map ? fopen(map, "w") : NULL, read ? fopen(read, "w") : NULL, { 0 },
			       aligned_alloc(PAGE, CHUNK), 0, 0, 0, 0, { { 0 } }, 0 };
	if (read && !c.read)
		die(read);
	if (only)
		c.only = load_ranges(only, &c.nonly);
	if (!c.out)
		die(out);
	if (map && !c.map)
		die(map);
	static char mbuf[1 << 20];
	if (c.map)
		setvbuf(c.map, mbuf, _IOFBF, sizeof(mbuf));
	if (!c.buf)
		die("out of memory");
	double t0 = now_ms();
	errno = 0;
	if (for_each_pid_in_ns(pid, round_pid, &c))
		die("the pod's pid namespace");
	if (fclose(c.out))
		die(out);
	if (c.map && fclose(c.map))
		die(map);
	if (c.read && c.last.end)
		write_all(c.read, &c.last, sizeof(c.last), "read ranges");
	if (c.read && fclose(c.read))
		die(read);
	set_save(&sent, state);
	printf("{\"pages\":%lu,\"privatePages\":%lu,\"processes\":%lu,\"newPages\":%lu,\"bytes\":%lu,\"knownPages\":%zu,\"ms\":%.1f}\n", c.pages, c.private_pages, c.processes, c.fresh,
	       c.fresh * (PAGE + 8), sent.len, now_ms() - t0);
	return 0;
}

/* ---- encode / decode ---- */

static int is_pages_img(const char *name)
{
	size_t n = strlen(name);
	return !strncmp(name, "pages-", 6) && n > 10 && !strcmp(name + n - 4, ".img");
}

/*
 * A whole file mapped read-only: NULL when empty; with `missing_ok`, NULL and *len == SIZE_MAX when there is
 * no such file.
 */
static const unsigned char *map_file(const char *file, size_t *len, int missing_ok)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && missing_ok) {
		*len = SIZE_MAX;
		return NULL;
	}
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(file);
	*len = (size_t)st.st_size;
	const unsigned char *map = *len ? mmap(NULL, *len, PROT_READ, MAP_SHARED, fd, 0) : NULL;
	close(fd);
	if (*len && map == MAP_FAILED)
		die(file);
	return map;
}

/* Where encoded images go, inside DIR: freeing their memory is left for after the freeze (the folder goes with DIR). */
#define ENCODED_DIR ".encoded"

/*
 * One pages-*.img of DIR replaced by its delta (see `encode`), read through a mapping; the image itself is
 * moved into DIR/.encoded. A file already encoded is skipped (returns 0).
 */
static int encode_file(const struct set *sent, const char *dir, const char *name, unsigned long *pages, unsigned long *refs)
{
	static char obuf[1 << 20];
	char in[4096], out[4200], done[4200];
	snprintf(in, sizeof(in), "%s/%s", dir, name);
	snprintf(out, sizeof(out), "%s.pmdelta", in);
	snprintf(done, sizeof(done), "%s/" ENCODED_DIR "/%s", dir, name);
	size_t len;
	const unsigned char *img = map_file(in, &len, 1);
	if (len == SIZE_MAX)
		return 0;
	FILE *fo = fopen(out, "w");
	if (!fo)
		die(out);
	setvbuf(fo, obuf, _IOFBF, sizeof(obuf));
	for (size_t at = 0; at + PAGE <= len; at += PAGE) {
		const unsigned char *page = img + at;
		uint64_t h = hash_page(page);
		unsigned char literal = set_has(sent, h, NULL) ? 0 : 1;
		write_all(fo, &literal, 1, out);
		write_all(fo, &h, sizeof(h), out);
		if (literal)
			write_all(fo, page, PAGE, out);
		else
			(*refs)++;
		(*pages)++;
	}
	if (len)
		munmap((void *)img, len);
	if (fclose(fo) || rename(in, done))
		die(out);
	return 1;
}

/*
 * With --watch: CRIU is about to dump into DIR. Each pages-*.img is encoded as soon as CRIU closes it
 * (inotify), on another CPU than CRIU's, while it dumps the next processes: a database's shared memory is
 * written early in the dump, and its encoding no longer follows the dump. Each delta written so is announced
 * by a line `@encoded NAME` (it may go to the destination at once). Commands on stdin, one line each:
 * `ready` (answered once the watch is set), `finish` (CRIU is done: encodes what is left, answers with the
 * totals, exits). stdin closing without `finish` stops it, the images left as they are.
 */
static int cmd_encode(const char *dir, const char *state, int watch)
{
	int in = -1;
	if (watch) {
		in = inotify_init1(IN_CLOEXEC);
		if (in < 0 || inotify_add_watch(in, dir, IN_CLOSE_WRITE) < 0)
			die("inotify");
	}
	char encoded[4200];
	snprintf(encoded, sizeof(encoded), "%s/" ENCODED_DIR, dir);
	if (mkdir(encoded, 0700) && errno != EEXIST)
		die(encoded);
	struct set sent;
	set_load(&sent, state);
	unsigned long pages = 0, refs = 0;
	double spent = 0;
	char cmd[64];
	size_t ncmd = 0;
	while (watch) {
		struct pollfd fds[2] = { { in, POLLIN, 0 }, { 0, POLLIN, 0 } };
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (fds[0].revents & POLLIN) {
			char ev[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
			ssize_t n = read(in, ev, sizeof(ev));
			for (ssize_t at = 0; n > 0 && at < n;) {
				struct inotify_event *e = (struct inotify_event *)(ev + at);
				if (e->len && is_pages_img(e->name)) {
					double t0 = now_ms();
					if (encode_file(&sent, dir, e->name, &pages, &refs))
						printf("@encoded %s.pmdelta\n", e->name), fflush(stdout);
					spent += now_ms() - t0;
				}
				at += sizeof(*e) + e->len;
			}
		}
		if (fds[1].revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(0, cmd + ncmd, sizeof(cmd) - 1 - ncmd);
			if (n <= 0)
				return 1;
			ncmd += (size_t)n;
			cmd[ncmd] = 0;
			char *nl;
			while ((nl = strchr(cmd, '\n'))) {
				*nl = 0;
				if (!strcmp(cmd, "finish"))
					watch = 0;
				else if (!strcmp(cmd, "ready"))
					printf("{\"ok\":true}\n"), fflush(stdout);
				else
					return fprintf(stderr, "pm-pages encode: unknown command %s\n", cmd), 2;
				ncmd -= (size_t)(nl + 1 - cmd);
				memmove(cmd, nl + 1, ncmd + 1);
			}
			if (ncmd == sizeof(cmd) - 1)
				return fprintf(stderr, "pm-pages encode: command too long\n"), 2;
		}
	}
	double t0 = now_ms();
	DIR *d = opendir(dir);
	if (!d)
		die(dir);
	struct dirent *e;
	while ((e = readdir(d)))
		if (is_pages_img(e->d_name))
			encode_file(&sent, dir, e->d_name, &pages, &refs);
	closedir(d);
	double last = now_ms() - t0;
	printf("{\"ok\":true,\"pages\":%lu,\"referenced\":%lu,\"literal\":%lu,\"ms\":%.1f,\"lastMs\":%.1f}\n", pages, refs, pages - refs,
	       spent + last, last);
	return 0;
}

/*
 * The destination's side: the rounds' caches, indexed by page hash, and the deltas rebuilt from them. A cache
 * is checked page by page as it is indexed (before the freeze when served), so a rebuild is memory copies only.
 */
struct decoder {
	const char *dir;
	struct set index; /* hash -> (cache number << 48 | offset of the page) */
	const unsigned char **maps;
	int ncaches, cap;
};

static void decoder_init(struct decoder *d, const char *dir)
{
	memset(d, 0, sizeof(*d));
	d->dir = dir;
	set_init_or_die(&d->index, 1 << 16);
}

/* Maps a cache file (records [u64 hash][4096 bytes]) and indexes every page of it; returns its pages. */
static unsigned long decoder_add(struct decoder *d, const char *file)
{
	if (d->ncaches == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 16;
		d->maps = realloc(d->maps, (size_t)d->cap * sizeof(*d->maps));
		if (!d->maps)
			die("out of memory");
	}
	size_t len;
	const unsigned char *map = map_file(file, &len, 0);
	uint64_t i = (uint64_t)d->ncaches;
	d->maps[d->ncaches++] = map;
	unsigned long n = 0;
	for (size_t off = 0; off + sizeof(uint64_t) + PAGE <= len; off += sizeof(uint64_t) + PAGE, n++) {
		uint64_t h;
		memcpy(&h, map + off, sizeof(h));
		if (hash_page(map + off + sizeof(h)) != h) {
			errno = EIO;
			die("page cache entry does not match its hash");
		}
		set_add(&d->index, h, (i << 48) | (off + sizeof(h)));
	}
	return n;
}

static void writev_all(int fd, struct iovec *iov, int n, const char *what)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			die(what);
		}
		while (n > 0 && (size_t)w >= iov->iov_len)
			w -= (ssize_t)iov->iov_len, iov++, n--;
		if (n > 0)
			iov->iov_base = (char *)iov->iov_base + w, iov->iov_len -= (size_t)w;
	}
}

static int is_delta(const char *name)
{
	size_t n = strlen(name);
	return n > 8 && !strcmp(name + n - 8, ".pmdelta") && !strchr(name, '/');
}

/*
 * Rebuilds DIR/NAME (a .pmdelta) into the pages image it encodes and removes the delta. The pages are written
 * straight from the caches' and the delta's mappings, IOV_MAX pieces at a time (adjacent ones merged).
 */
static void decode_file(struct decoder *d, const char *name, unsigned long *pages, unsigned long *fromCache)
{
	char in[4096], out[4096];
	size_t n = strlen(name);
	snprintf(in, sizeof(in), "%s/%s", d->dir, name);
	snprintf(out, sizeof(out), "%s/%.*s", d->dir, (int)(n - 8), name);
	size_t len;
	const unsigned char *delta = map_file(in, &len, 0);
	int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fo < 0)
		die(out);
	static struct iovec iov[IOV_MAX];
	int niov = 0;
	for (size_t at = 0; at < len;) {
		uint64_t h, where;
		const unsigned char *page;
		if (at + 1 + sizeof(h) > len)
			errno = 0, die("truncated delta");
		unsigned char literal = delta[at];
		memcpy(&h, delta + at + 1, sizeof(h));
		at += 1 + sizeof(h);
		if (literal) {
			if (at + PAGE > len)
				errno = 0, die("truncated delta");
			page = delta + at;
			at += PAGE;
		} else {
			if (!set_has(&d->index, h, &where)) {
				errno = ENOENT;
				die("a referenced page is not in the page cache");
			}
			page = d->maps[where >> 48] + (where & ((1ULL << 48) - 1));
			(*fromCache)++;
		}
		(*pages)++;
		if (niov && (const unsigned char *)iov[niov - 1].iov_base + iov[niov - 1].iov_len == page) {
			iov[niov - 1].iov_len += PAGE;
			continue;
		}
		if (niov == IOV_MAX)
			writev_all(fo, iov, niov, out), niov = 0;
		iov[niov].iov_base = (void *)page;
		iov[niov++].iov_len = PAGE;
	}
	writev_all(fo, iov, niov, out);
	if (close(fo) || unlink(in))
		die(out);
	if (len)
		munmap((void *)delta, len);
}

/* Every delta left in the directory. */
static void decode_rest(struct decoder *d, unsigned long *pages, unsigned long *fromCache)
{
	DIR *dir = opendir(d->dir);
	if (!dir)
		die(d->dir);
	struct dirent *e;
	while ((e = readdir(dir)))
		if (is_delta(e->d_name))
			decode_file(d, e->d_name, pages, fromCache);
	closedir(dir);
}

static int cmd_decode(const char *dir, char **caches, int ncaches)
{
	double t0 = now_ms();
	struct decoder d;
	decoder_init(&d, dir);
	for (int i = 0; i < ncaches; i++)
		decoder_add(&d, caches[i]);
	unsigned long pages = 0, fromCache = 0;
	decode_rest(&d, &pages, &fromCache);
	printf("{\"pages\":%lu,\"fromCache\":%lu,\"ms\":%.1f}\n", pages, fromCache, now_ms() - t0);
	return 0;
}

/*
 * decode --serve: lives from the first pre-copy round to the restore, so that nothing but copies is left for
 * the freeze. Commands on stdin, one line each, answered one line each: `cache PATH` (index a round's cache),
 * `decode NAME` (rebuild the delta NAME of DIR, which has arrived whole: the rest of the images are still on
 * their way), `finish` (rebuild every delta left, answer the totals, exit). stdin closing ends it.
 */
static int cmd_decode_serve(const char *dir)
{
	struct decoder d;
	decoder_init(&d, dir);
	unsigned long pages = 0, fromCache = 0, indexed = 0;
	double spent = 0;
	char line[4200];
	while (fgets(line, sizeof(line), stdin)) {
		size_t n = strlen(line);
		if (n == 0 || line[n - 1] != '\n')
			return fprintf(stderr, "pm-pages decode: command too long\n"), 2;
		line[n - 1] = 0;
		double t0 = now_ms();
		if (!strncmp(line, "cache ", 6)) {
			indexed += decoder_add(&d, line + 6);
			printf("{\"ok\":true,\"indexed\":%lu}\n", indexed);
		} else if (!strncmp(line, "decode ", 7) && is_delta(line + 7)) {
			unsigned long p = 0, c = 0;
			decode_file(&d, line + 7, &p, &c);
			pages += p, fromCache += c;
			double ms = now_ms() - t0;
			spent += ms;
			printf("{\"ok\":true,\"pages\":%lu,\"fromCache\":%lu,\"ms\":%.1f}\n", p, c, ms);
		} else if (!strcmp(line, "finish")) {
			decode_rest(&d, &pages, &fromCache);
			double last = now_ms() - t0;
			printf("{\"ok\":true,\"pages\":%lu,\"fromCache\":%lu,\"ms\":%.1f,\"lastMs\":%.1f}\n", pages, fromCache, spent + last, last);
			return 0;
		} else {
			return fprintf(stderr, "pm-pages decode: unknown command %.80s\n", line), 2;
		}
		fflush(stdout);
	}
	return 1;
}

/* ---- final (pre-copy with tracked writes) ---- */

static int range_cmp(const void *a, const void *b)
{
	const struct page_range *x = a, *y = b;
	if (x->vpid != y->vpid)
		return x->vpid < y->vpid ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

struct final_ctx {
	/* Ranges not written since the last round (pm-wptrack's `final`), sorted, disjoint. */
	struct page_range *clean;
	size_t nclean;
	/* Ranges some round read (so the destination holds their pages), sorted, disjoint. */
	struct page_range *read;
	size_t nread;
	FILE *out;
	unsigned char *buf;
	unsigned long pages, literal;
};

/* Whether a sorted list of disjoint ranges holds (vpid, addr). */
static int in_ranges(const struct page_range *rs, size_t n, uint32_t vpid, uint64_t addr)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct page_range *r = &rs[mid];
		if (r->vpid < vpid || (r->vpid == vpid && r->end <= addr))
			lo = mid + 1;
		else if (r->vpid > vpid || r->start > addr)
			hi = mid;
		else
			return 1;
	}
	return 0;
}

static void final_pid(int pid, void *arg)
{
	struct final_ctx *c = arg;
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "r");
	int vpid = pod_pid(pid);
	if (!maps || vpid < 0)
		die("a process of the pod is gone");
	while (fgets(line, sizeof(line), maps)) {
		unsigned long start, end, inode;
		char perms[8];
		/* CRIU's lazy pages are those of private anonymous mappings; each readable one is covered here. */
		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu", &start, &end, perms, &inode) != 4 || perms[0] != 'r' ||
		    perms[3] != 'p' || inode != 0 || strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall"))
			continue;
		for (unsigned long a = start; a < end; a += CHUNK) {
			size_t len = end - a < CHUNK ? end - a : CHUNK;
			ssize_t got = -1;
			for (size_t off = 0; off < len; off += PAGE) {
				uint32_t v = (uint32_t)vpid;
				c->pages++;
				if (in_ranges(c->clean, c->nclean, v, a + off) && in_ranges(c->read, c->nread, v, a + off))
					continue;
				if (got < 0) {
					struct iovec local = { c->buf, len }, remote = { (void *)a, len };
					got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
					if (got < 0)
						got = 0;
				}
				if (off + PAGE > (size_t)got)
					continue; /* not readable (a guard page): nothing to restore there */
				uint32_t head[2] = { v, 0 };
				uint64_t at = a + off;
				write_all(c->out, head, sizeof(head), "final pages");
				write_all(c->out, &at, sizeof(at), "final pages");
				write_all(c->out, c->buf + off, PAGE, "final pages");
				c->literal++;
			}
		}
	}
	fclose(maps);
}

/* Sorts ranges and merges those that overlap or touch. */
static void normalize(struct page_range *r, size_t *n)
{
	qsort(r, *n, sizeof(*r), range_cmp);
	size_t k = 0;
	for (size_t i = 0; i < *n; i++) {
		if (k && r[k - 1].vpid == r[i].vpid && r[i].start <= r[k - 1].end) {
			if (r[i].end > r[k - 1].end)
				r[k - 1].end = r[i].end;
		} else {
			r[k++] = r[i];
		}
	}
	*n = k;
}

/*
 * With the pod stopped: writes to OUT every page of its private anonymous memory that the destination
 * cannot take from the rounds — written since the last round (not in CLEAN), or never read by one (not in
 * READ, every round's ranges) — as {u32 vpid, u32 0, u64 vaddr, 4096 bytes}, after a header
 * {"PMFINAL1", u32 round, u32 0}.
 */
static int cmd_final(int pid, const char *readfile, const char *cleanfile, const char *out, unsigned round)
{
	double t0 = now_ms();
	struct final_ctx c = { 0 };
	c.clean = load_ranges(cleanfile, &c.nclean);
	normalize(c.clean, &c.nclean);
	c.read = load_ranges(readfile, &c.nread);
	normalize(c.read, &c.nread);
	c.out = fopen(out, "w");
	c.buf = aligned_alloc(PAGE, CHUNK);
	if (!c.out || !c.buf)
		die(out);
	static char obuf[1 << 20];
	setvbuf(c.out, obuf, _IOFBF, sizeof(obuf));
	uint32_t head[4];
	memcpy(head, "PMFINAL1", 8);
	head[2] = round;
	head[3] = 0;
	write_all(c.out, head, sizeof(head), out);
	errno = 0;
	if (for_each_pid_in_ns(pid, final_pid, &c))
		die("the pod's pid namespace");
	if (fclose(c.out))
		die(out);
	printf("{\"pages\":%lu,\"literal\":%lu,\"referenced\":%lu,\"ms\":%.1f}\n", c.pages, c.literal, c.pages - c.literal, now_ms() - t0);
	return 0;
}

/* ---- blocks (a volume's files, compared block by block from round to round) ---- */

/* A keyed hash of up to one block (the four lanes of hash_page, seeded by KEY), its length mixed in. */
static uint64_t hash_block(const unsigned char *p, size_t len, const uint64_t key[4])
{
	uint64_t a = key[0], b = key[1], c = key[2], d = key[3], w[4];
	size_t i = 0;
	for (; i + sizeof(w) <= len; i += sizeof(w)) {
		memcpy(w, p + i, sizeof(w));
		a = pagehash_mix(a, w[0]), b = pagehash_mix(b, w[1]), c = pagehash_mix(c, w[2]), d = pagehash_mix(d, w[3]);
	}
	if (i < len) {
		memset(w, 0, sizeof(w));
		memcpy(w, p + i, len - i);
		a = pagehash_mix(a, w[0]), b = pagehash_mix(b, w[1]), c = pagehash_mix(c, w[2]), d = pagehash_mix(d, w[3]);
	}
	uint64_t h = pagehash_mix(pagehash_mix(pagehash_mix(pagehash_mix(a, b), c), d), (uint64_t)len);
	return h ^ (h >> 29);
}

/*
 * blocks --block N: stdin is 64 hex digits (a 32-byte key, then a newline) and NUL-terminated paths. For
 * each path, in order, one line on stdout: `SIZE HASH...` (16 hex digits per block of N bytes, the last
 * one short), or `-` when the file is gone. Keyed, so that a pod cannot make a changed block hash like the
 * one it replaces without knowing the key (it never leaves the agent).
 */
static int cmd_blocks(size_t block)
{
	if (block == 0 || block > (16 << 20))
		return fprintf(stderr, "pm-pages blocks: bad block size\n"), 2;
	char hex[80];
	uint64_t key[4];
	if (!fgets(hex, sizeof(hex), stdin) || strlen(hex) < 64)
		return fprintf(stderr, "pm-pages blocks: no key\n"), 2;
	for (int i = 0; i < 4; i++) {
		char part[17];
		memcpy(part, hex + 16 * i, 16);
		part[16] = 0;
		key[i] = strtoull(part, NULL, 16);
	}
	unsigned char *buf = malloc(block);
	static char obuf[1 << 20];
	setvbuf(stdout, obuf, _IOFBF, sizeof(obuf));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	if (!buf)
		die("out of memory");
	while ((n = getdelim(&line, &cap, 0, stdin)) > 0) {
		if (line[n - 1] != 0)
			return fprintf(stderr, "pm-pages blocks: a path without its NUL\n"), 2;
		int fd = open(line, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		struct stat st;
		if (fd < 0 && errno == ENOENT) {
			printf("-\n");
			continue;
		}
		if (fd < 0 || fstat(fd, &st))
			die(line);
		printf("%lld ", (long long)st.st_size);
		for (;;) {
			size_t got = 0;
			while (got < block) {
				ssize_t r = read(fd, buf + got, block - got);
				if (r < 0 && errno == EINTR)
					continue;
				if (r < 0)
					die(line);
				if (r == 0)
					break;
				got += (size_t)r;
			}
			if (got == 0)
				break;
			printf("%016llx", (unsigned long long)hash_block(buf, got, key));
			if (got < block)
				break;
		}
		printf("\n");
		close(fd);
	}
	free(line);
	free(buf);
	return fflush(stdout) ? 1 : 0;
}

static const char *opt(int argc, char **argv, const char *name)
{
	for (int i = 2; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return argv[i + 1];
	return NULL;
}

static int has_flag(int argc, char **argv, const char *name)
{
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "";
	if (!strcmp(cmd, "round") && opt(argc, argv, "--pid") && opt(argc, argv, "--state") && opt(argc, argv, "--out"))
		return cmd_round(atoi(opt(argc, argv, "--pid")), opt(argc, argv, "--state"), opt(argc, argv, "--out"), opt(argc, argv, "--map"),
				 opt(argc, argv, "--only"), opt(argc, argv, "--read"));
	if (!strcmp(cmd, "final") && opt(argc, argv, "--pid") && opt(argc, argv, "--read") && opt(argc, argv, "--clean") &&
	    opt(argc, argv, "--out") && opt(argc, argv, "--round"))
		return cmd_final(atoi(opt(argc, argv, "--pid")), opt(argc, argv, "--read"), opt(argc, argv, "--clean"), opt(argc, argv, "--out"),
				 (unsigned)atoi(opt(argc, argv, "--round")));
	if (!strcmp(cmd, "encode") && opt(argc, argv, "--dir") && opt(argc, argv, "--state"))
		return cmd_encode(opt(argc, argv, "--dir"), opt(argc, argv, "--state"), has_flag(argc, argv, "--watch"));
	if (!strcmp(cmd, "decode") && opt(argc, argv, "--dir") && argc == 5 && !strcmp(argv[4], "--serve"))
		return cmd_decode_serve(opt(argc, argv, "--dir"));
	if (!strcmp(cmd, "decode") && opt(argc, argv, "--dir") && argc >= 6 && !strcmp(argv[4], "--cache"))
		return cmd_decode(opt(argc, argv, "--dir"), argv + 5, argc - 5);
	if (!strcmp(cmd, "blocks") && opt(argc, argv, "--block"))
		return cmd_blocks((size_t)strtoull(opt(argc, argv, "--block"), NULL, 10));
	fprintf(stderr, "usage: pm-pages round --pid PID --state F --out F [--map F --read F [--only F]] | final --pid PID --read F --clean F --out F --round N |"
			" encode --dir D --state F [--watch] | decode --dir D (--cache F... | --serve) | blocks --block N\n");
	return 2;
}
