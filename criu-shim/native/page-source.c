/*
 * pm-page-source: serves a stopped pod's lazy memory to a `criu lazy-pages` daemon, speaking CRIU's
 * page-server protocol (criu/page-xfer.c) on stdin (requests) and stdout (replies).
 *
 * Usage: pm-page-source --pid ROOT
 *   ROOT is the host pid of the pod's init. After a lazy dump that left the tree stopped, every page the
 *   images mark PE_LAZY is still in the stopped tasks' memory: each GET is answered from there with
 *   process_vm_readv, so nothing is copied inside the freeze and no page is held twice.
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

#include "../../node-runtime/native/pidns.h"

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
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "NSpid:", 6))
			continue;
		char *last = strrchr(line, '\t');
		if (last && nmap < MAX_TASKS) {
			map[nmap].vpid = atoi(last + 1);
			map[nmap].pid = pid;
			nmap++;
		}
	}
	fclose(f);
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

int main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "--pid"))
		die(1, "usage: pm-page-source --pid ROOT");
	int root = atoi(argv[2]);
	build_map(root);
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
		int pid = host_pid(pi.dst_id);
		if (pid < 0) {
			/* A task forked after this started, before the freeze: look again. */
			nmap = 0;
			build_map(root);
			pid = host_pid(pi.dst_id);
		}
		if (pid < 0)
			die(1, "GET for task %llu, which is not in the pod", (unsigned long long)pi.dst_id);
		uint64_t want = pi.nr_pages < MAX_REPLY_PAGES ? pi.nr_pages : MAX_REPLY_PAGES;
		if (want == 0 || pi.vaddr % PAGE_BYTES)
			die(1, "GET of %llu pages at %#llx", (unsigned long long)pi.nr_pages, (unsigned long long)pi.vaddr);
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
