/*
 * pm-page-source: serves a stopped pod's lazy memory to a `criu lazy-pages` daemon, speaking CRIU's
 * page-server protocol (criu/page-xfer.c) on stdin (requests) and stdout (replies).
 *
 * Usage: pm-page-source --pid ROOT
 *   ROOT is the host pid of the pod's init. After a lazy dump that left the tree stopped, every page the
 *   images mark PE_LAZY is still in the stopped tasks' memory: each GET is answered from there with
 *   process_vm_readv, so nothing is copied inside the freeze and no page is held twice.
 * Usage: pm-page-source --store        (commands on fd 3: map PATH, cache PATH, final PATH)
 *   On the destination of a pre-copy whose writes were tracked: every page comes from what already arrived,
 *   indexed as it arrives. The final pages (pm-pages final) are those written since the last round, by
 *   address; the rounds' maps, in round order (a later record of a page replaces an earlier one), give every
 *   other page's hash, and the rounds' caches hold the page with that hash (checked when served).
 *
 * Requests are struct page_server_iov (32 bytes, host-endian): u32 cmd, 4 bytes padding, u64 nr_pages,
 * u64 vaddr, u64 dst_id. GET (7) names a task by its pid inside the pod (dst_id) and is answered with a
 * header {ADD_F | PE_PRESENT << 16, nr_pages, vaddr, dst_id} and nr_pages * 4096 bytes, possibly fewer
 * pages than asked (the daemon asks again for the rest). CLOSE / FORCE_CLOSE get a 4-byte status 0.
 *
 * Exit status: 0 after CLOSE (the daemon has every page it wanted), 2 on EOF before CLOSE, 1 on any error.
 * The last line on stderr is "pm-page-source: requests=N pages=M" or the error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sys/mman.h>
#include <sys/stat.h>

#include "../../node-runtime/native/pidns.h"
#include "../../node-runtime/native/pagehash.h"
#include "../../node-runtime/native/pageset.h"

#define PAGE_BYTES 4096UL
#define PS_IOV_ADD_F 6
#define PS_IOV_GET 7
#define PS_IOV_CLOSE 0x1023
#define PS_IOV_FORCE_CLOSE 0x1024
#define PS_CMD_MASK 0xffffu
#define PE_PRESENT 4u
/* Replies carry at most this many pages (the daemon asks again for the rest): bounded memory. */
#define MAX_REPLY_PAGES 4096UL
/* A pod has at most this many tasks here; more means the map below would need to grow. */
#define MAX_TASKS 65536

struct ps_iov {
	uint32_t cmd;
	uint32_t pad;
	uint64_t nr_pages;
	uint64_t vaddr;
	uint64_t dst_id;
};
_Static_assert(sizeof(struct ps_iov) == 32, "page_server_iov is 32 bytes on x86-64");

static unsigned long requests, pages;

static void __attribute__((noreturn, format(printf, 2, 3))) die(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("pm-page-source: ", stderr);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (requests=%lu pages=%lu)\n", requests, pages);
	va_end(ap);
	exit(code);
}

/* Pod pid -> host pid, for every task in ROOT's pid namespace (NSpid's last field is the pod pid). */
static struct {
	int vpid, pid;
} map[MAX_TASKS];
static int nmap;

static void map_task(int pid, void *arg)
{
	(void)arg;
	int vpid = pod_pid(pid);
	if (vpid >= 0 && nmap < MAX_TASKS) {
		map[nmap].vpid = vpid;
		map[nmap].pid = pid;
		nmap++;
	}
}

static void build_map(int root)
{
	if (for_each_pid_in_ns(root, map_task, NULL))
		die(1, "pod init %d: %s", root, strerror(errno));
	if (nmap == 0)
		die(1, "no task in the pid namespace of %d", root);
}

static int host_pid(uint64_t vpid)
{
	for (int i = 0; i < nmap; i++)
		if ((uint64_t)map[i].vpid == vpid)
			return map[i].pid;
	return -1;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = read(fd, (char *)buf + got, len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die(1, "read: %s", strerror(errno));
		if (r == 0)
			return got == 0 ? 0 : -1;
		got += (size_t)r;
	}
	return 1;
}

static void write_full(const struct iovec *iov_in, int n)
{
	struct iovec iov[2];
	memcpy(iov, iov_in, sizeof(struct iovec) * n);
	while (n > 0) {
		ssize_t w = writev(STDOUT_FILENO, iov, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die(1, "write: %s", strerror(errno));
		while (n > 0 && (size_t)w >= iov[0].iov_len) {
			w -= iov[0].iov_len;
			iov[0] = iov[1];
			n--;
		}
		if (n > 0) {
			iov[0].iov_base = (char *)iov[0].iov_base + w;
			iov[0].iov_len -= w;
		}
	}
}

/* ---- --store: pages from the pre-copy rounds and the final pages ---- */

static struct set final_idx, addr_hash, cache_idx;
static const unsigned char **mapped;

static const unsigned char *map_file(const char *file, size_t *len)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st))
		die(1, "%s: %s", file, strerror(errno));
	*len = (size_t)st.st_size;
	const unsigned char *m = *len ? mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
	close(fd);
	if (*len && m == MAP_FAILED)
		die(1, "%s: %s", file, strerror(errno));
	return m;
}

static void add_or_die(struct set *s, uint64_t k, uint64_t v)
{
	if (set_insert(s, k, v, 1))
		die(1, "page index: %s", strerror(errno));
}

static size_t nmapped, capmapped;

/* Keeps a mapped file; its number (< 2^15) goes into index values. */
static uint64_t keep(const unsigned char *m)
{
	if (nmapped == capmapped) {
		capmapped = capmapped ? capmapped * 2 : 16;
		mapped = realloc(mapped, capmapped * sizeof(*mapped));
		if (!mapped)
			die(1, "out of memory");
	}
	mapped[nmapped] = m;
	return nmapped++;
}

/* A round's address -> hash records; a later record of a page replaces an earlier one. */
static void load_map(const char *file)
{
	size_t len;
	const unsigned char *m = map_file(file, &len);
	for (size_t off = 0; off + 24 <= len; off += 24) {
		uint32_t vpid;
		uint64_t vaddr, h;
		memcpy(&vpid, m + off, 4);
		memcpy(&vaddr, m + off + 8, 8);
		memcpy(&h, m + off + 16, 8);
		add_or_die(&addr_hash, page_key(vpid, vaddr), h);
	}
	if (len)
		munmap((void *)m, len);
}

/* A round's pages, [u64 hash][4096 bytes] records. */
static void load_cache(const char *file)
{
	size_t len;
	const unsigned char *c = map_file(file, &len);
	uint64_t n = keep(c);
	for (size_t off = 0; off + 8 + PAGE_BYTES <= len; off += 8 + PAGE_BYTES) {
		uint64_t h;
		memcpy(&h, c + off, 8);
		add_or_die(&cache_idx, h, (n << 48) | (off + 8));
	}
}

/* The final pages (pm-pages final): by address, ahead of everything else. */
static void load_final(const char *file)
{
	size_t len;
	const unsigned char *f = map_file(file, &len);
	if (len < 16 || memcmp(f, "PMFINAL1", 8))
		die(1, "%s: not a final pages file", file);
	uint64_t n = keep(f);
	for (size_t off = 16; off + 16 + PAGE_BYTES <= len; off += 16 + PAGE_BYTES) {
		uint32_t vpid;
		uint64_t vaddr;
		memcpy(&vpid, f + off, 4);
		memcpy(&vaddr, f + off + 8, 8);
		add_or_die(&final_idx, page_key(vpid, vaddr), (n << 48) | (off + 16));
	}
}

/*
 * --store: indexes what arrives, as it arrives, from commands on fd 3 ("map PATH", "cache PATH", each
 * answered "ok"), so that nothing is left to index once the pod is frozen; "final PATH" indexes the final
 * pages, is answered "ok", and serving begins.
 */
static void load_store(void)
{
	if (set_init(&final_idx, 1 << 10) || set_init(&addr_hash, 1 << 16) || set_init(&cache_idx, 1 << 16))
		die(1, "out of memory");
	FILE *ctl = fdopen(3, "r"), *reply = fdopen(dup(3), "w");
	if (!ctl || !reply)
		die(1, "no control channel on fd 3: %s", strerror(errno));
	char line[4200];
	while (fgets(line, sizeof(line), ctl)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "map ", 4))
			load_map(line + 4);
		else if (!strncmp(line, "cache ", 6))
			load_cache(line + 6);
		else if (!strncmp(line, "final ", 6))
			load_final(line + 6);
		else
			die(1, "unknown store command: %s", line);
		fputs("ok\n", reply);
		fflush(reply);
		if (!strncmp(line, "final ", 6))
			return;
	}
	die(2, "the control channel ended before the final pages");
}

static const unsigned char *at(uint64_t where)
{
	return mapped[where >> 48] + (where & ((1ULL << 48) - 1));
}

/* Fills buf with n pages of task vpid from vaddr on. */
static void fill_from_store(uint64_t vpid, uint64_t vaddr, uint64_t n, char *buf)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t key = page_key((uint32_t)vpid, vaddr + i * PAGE_BYTES), where, h;
		if (set_has(&final_idx, key, &where)) {
			memcpy(buf + i * PAGE_BYTES, at(where), PAGE_BYTES);
			continue;
		}
		if (!set_has(&addr_hash, key, &h) || !set_has(&cache_idx, h, &where))
			die(1, "task %llu: page %#llx is in no pre-copy round and not among the final pages", (unsigned long long)vpid,
			    (unsigned long long)(vaddr + i * PAGE_BYTES));
		memcpy(buf + i * PAGE_BYTES, at(where), PAGE_BYTES);
		if (hash_page((const unsigned char *)buf + i * PAGE_BYTES) != h)
			die(1, "task %llu: page %#llx does not match its hash in the page cache", (unsigned long long)vpid,
			    (unsigned long long)(vaddr + i * PAGE_BYTES));
	}
}

int main(int argc, char **argv)
{
	int store = argc == 2 && !strcmp(argv[1], "--store");
	int root = 0;
	if (store) {
		load_store();
	} else {
		if (argc != 3 || strcmp(argv[1], "--pid"))
			die(1, "usage: pm-page-source --pid ROOT | --store");
		root = atoi(argv[2]);
		build_map(root);
	}
	/* A reply of 1 MiB goes into the pipe in one write instead of sixteen (no error if stdout is no pipe). */
	fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);
	char *buf = malloc(MAX_REPLY_PAGES * PAGE_BYTES);
	if (!buf)
		die(1, "out of memory");

	for (;;) {
		struct ps_iov pi;
		int r = read_full(STDIN_FILENO, &pi, sizeof(pi));
		if (r == 0)
			die(2, "the page channel ended before CLOSE");
		if (r < 0)
			die(1, "truncated request");
		uint32_t cmd = pi.cmd & PS_CMD_MASK;
		if (cmd == PS_IOV_CLOSE || cmd == PS_IOV_FORCE_CLOSE) {
			int32_t status = 0;
			struct iovec v = { &status, sizeof(status) };
			write_full(&v, 1);
			fprintf(stderr, "pm-page-source: requests=%lu pages=%lu\n", requests, pages);
			return 0;
		}
		if (cmd != PS_IOV_GET)
			die(1, "unexpected command %u", pi.cmd);
		requests++;
		uint64_t want = pi.nr_pages < MAX_REPLY_PAGES ? pi.nr_pages : MAX_REPLY_PAGES;
		if (want == 0 || pi.vaddr % PAGE_BYTES)
			die(1, "GET of %llu pages at %#llx", (unsigned long long)pi.nr_pages, (unsigned long long)pi.vaddr);
		if (store) {
			fill_from_store(pi.dst_id, pi.vaddr, want, buf);
			pi.nr_pages = want;
			pi.cmd = PS_IOV_ADD_F | (PE_PRESENT << 16);
			pi.pad = 0;
			struct iovec out[2] = { { &pi, sizeof(pi) }, { buf, want * PAGE_BYTES } };
			write_full(out, 2);
			pages += want;
			continue;
		}
		int pid = host_pid(pi.dst_id);
		if (pid < 0) {
			/* A task forked after this started, before the freeze: look again. */
			nmap = 0;
			build_map(root);
			pid = host_pid(pi.dst_id);
		}
		if (pid < 0)
			die(1, "GET for task %llu, which is not in the pod", (unsigned long long)pi.dst_id);
		struct iovec local = { buf, want * PAGE_BYTES };
		struct iovec remote = { (void *)(uintptr_t)pi.vaddr, want * PAGE_BYTES };
		ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		if (got < (ssize_t)PAGE_BYTES)
			die(1, "task %llu (pid %d): cannot read %#llx: %s", (unsigned long long)pi.dst_id, pid,
			    (unsigned long long)pi.vaddr, got < 0 ? strerror(errno) : "short read");
		pi.nr_pages = (uint64_t)got / PAGE_BYTES;
		pi.cmd = PS_IOV_ADD_F | (PE_PRESENT << 16);
		pi.pad = 0;
		struct iovec out[2] = { { &pi, sizeof(pi) }, { buf, pi.nr_pages * PAGE_BYTES } };
		write_full(out, 2);
		pages += pi.nr_pages;
	}
}
