// pm-memscan: measures a pod's writable memory and how fast it changes, without soft-dirty tracking.
//
//   pm-memscan --pid PID [--interval-ms N]
//
// Every process in PID's pid namespace is scanned: each private writable mapping is read with
// process_vm_readv (the pod is not stopped or traced) and every 4 KiB page is hashed. With --interval-ms
// the same pages are read again after N ms; pages whose hash changed are dirty. One JSON line:
//   {"processes","regions","pages","bytes","zeroPages","scanMs","intervalMs","changedPages","dirtyBytesPerSec"}
// The kernel here has no CONFIG_MEM_SOFT_DIRTY, so content hashes are how PodMotion finds changed pages.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pagehash.h"
#include "pidns.h"

#define CHUNK (256 * PAGE)
#define MAX_REGIONS 65536
#define MAX_PAGES (64UL << 20) /* 256 GiB of pages: a bound, not an expectation */

struct region {
	int pid;
	unsigned long start, end;
	uint64_t *hashes;
};

static struct region regions[MAX_REGIONS];
static int nregions, nprocs;
static unsigned long total_pages;

static void die(const char *msg)
{
	fprintf(stderr, "pm-memscan: %s: %s\n", msg, strerror(errno));
	exit(1);
}

static void add_regions(int pid, void *unused)
{
	(void)unused;
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	nprocs++;
	while (fgets(line, sizeof(line), f)) {
		unsigned long start, end;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3)
			continue;
		// Private writable memory is what a checkpoint carries as pages; skip the kernel's own mappings.
		if (perms[1] != 'w' || perms[3] != 'p' || strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall"))
			continue;
		if (nregions >= MAX_REGIONS || total_pages + (end - start) / PAGE > MAX_PAGES)
			break;
		regions[nregions].pid = pid;
		regions[nregions].start = start;
		regions[nregions].end = end;
		regions[nregions].hashes = calloc((end - start) / PAGE, sizeof(uint64_t));
		if (!regions[nregions].hashes)
			die("calloc");
		total_pages += (end - start) / PAGE;
		nregions++;
	}
	fclose(f);
}

// Reads every region and hashes its pages; returns how many differ from the stored hashes (and stores
// the new ones). Pages that cannot be read (unmapped meanwhile) count as changed, hashed as 0.
static unsigned long scan(unsigned char *buf, unsigned long *zero_pages)
{
	static unsigned char zero[PAGE];
	unsigned long changed = 0;
	*zero_pages = 0;
	for (int r = 0; r < nregions; r++) {
		struct region *rg = &regions[r];
		for (unsigned long a = rg->start; a < rg->end; a += CHUNK) {
			size_t len = rg->end - a < CHUNK ? rg->end - a : CHUNK;
			struct iovec local = { buf, len }, remote = { (void *)a, len };
			ssize_t got = process_vm_readv(rg->pid, &local, 1, &remote, 1, 0);
			for (size_t off = 0; off < len; off += PAGE) {
				unsigned long idx = (a + off - rg->start) / PAGE;
				uint64_t h = 0;
				if (got >= (ssize_t)(off + PAGE)) {
					if (!memcmp(buf + off, zero, PAGE))
						(*zero_pages)++;
					h = hash_page(buf + off);
				}
				if (rg->hashes[idx] != h || h == 0)
					changed++;
				rg->hashes[idx] = h;
			}
		}
	}
	return changed;
}

int main(int argc, char **argv)
{
	int root = 0;
	long interval = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--pid"))
			root = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--interval-ms"))
			interval = atol(argv[i + 1]);
	}
	if (root <= 0 || interval < 0 || interval > 60000) {
		fprintf(stderr, "usage: pm-memscan --pid PID [--interval-ms 0..60000]\n");
		return 2;
	}
	if (for_each_pid_in_ns(root, add_regions, NULL))
		die("the pod's pid namespace");
	unsigned char *buf = aligned_alloc(PAGE, CHUNK);
	if (!buf)
		die("aligned_alloc");
	unsigned long zero_pages;
	double t0 = now_ms();
	scan(buf, &zero_pages);
	double scan_ms = now_ms() - t0;
	unsigned long changed = 0;
	if (interval > 0) {
		struct timespec ts = { interval / 1000, (interval % 1000) * 1000000L };
		nanosleep(&ts, NULL);
		changed = scan(buf, &zero_pages);
	}
	printf("{\"processes\":%d,\"regions\":%d,\"pages\":%lu,\"bytes\":%lu,\"zeroPages\":%lu,\"scanMs\":%.1f,"
	       "\"intervalMs\":%ld,\"changedPages\":%lu,\"dirtyBytesPerSec\":%.0f}\n",
	       nprocs, nregions, total_pages, total_pages * PAGE, zero_pages, scan_ms, interval, changed,
	       interval > 0 ? changed * PAGE * 1000.0 / (interval + scan_ms) : 0.0);
	return 0;
}
