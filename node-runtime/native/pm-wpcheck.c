// pm-wpcheck: does this kernel track written pages without soft-dirty? Probes asynchronous userfaultfd
// write-protection (UFFD_FEATURE_WP_ASYNC) read back with the PAGEMAP_SCAN ioctl (Linux 6.7+): on its own
// memory it write-protects 64 MiB, writes every 97th page, has the kernel write the page after each of the
// first 64 of those (read() from a pipe: a kernel-mode write, which a userfaultfd made with
// UFFD_USER_MODE_ONLY, as an unprivileged pod's must be, must record too), and checks that the scan reports
// exactly those pages as written — and that a second scan, after re-protecting, reports none.
//
//   pm-wpcheck
//
// Prints one JSON line {"ok":true,"pages":N,"written":W,"scanMs":T} and exits 0 when the kernel tracks
// writes exactly; otherwise {"ok":false,"error":"..."} and exit 1.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffdwp.h"

#define PAGE 4096UL
#define BYTES (64UL << 20)
#define STRIDE 97
#define MAX_REGIONS 8192
#define KERNEL_WRITES 64UL

static int fail(const char *what)
{
	printf("{\"ok\":false,\"error\":\"%s: %s\"}\n", what, strerror(errno));
	return 1;
}

static struct page_region regions[MAX_REGIONS];

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Pages the scan reports written in [m, m+BYTES), re-protecting them; -1 on error.
static long scan(int pagemap, char *m)
{
	struct pm_scan_arg a = {
		.size = sizeof(a), .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)m, .end = (uintptr_t)m + BYTES, .vec = (uintptr_t)regions, .vec_len = MAX_REGIONS,
		.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
	};
	long n = ioctl(pagemap, PAGEMAP_SCAN, &a);
	if (n < 0)
		return -1;
	long pages = 0;
	for (long i = 0; i < n; i++)
		pages += (long)((regions[i].end - regions[i].start) / PAGE);
	return pages;
}

int main(void)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (uffd < 0)
		return fail("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (ioctl(uffd, UFFDIO_API, &api))
		return fail("UFFDIO_API with WP_ASYNC");
	char *m = mmap(NULL, BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return fail("mmap");
	memset(m, 1, BYTES);
	struct uffdio_register reg = { .range = { (uintptr_t)m, BYTES }, .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		return fail("UFFDIO_REGISTER (write-protect)");
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)m, BYTES }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp))
		return fail("UFFDIO_WRITEPROTECT");
	long expected = 0;
	for (unsigned long off = 0; off < BYTES; off += STRIDE * PAGE, expected++)
		m[off] = 2;
	int pipefd[2];
	if (pipe(pipefd))
		return fail("pipe");
	for (unsigned long k = 0; k < KERNEL_WRITES; k++, expected++) {
		char c = 3;
		if (write(pipefd[1], &c, 1) != 1 || read(pipefd[0], m + (k * STRIDE + 1) * PAGE, 1) != 1)
			return fail("kernel-mode write through read()");
	}
	close(pipefd[0]);
	close(pipefd[1]);
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap < 0)
		return fail("open /proc/self/pagemap");
	double t0 = now_ms();
	long written = scan(pagemap, m);
	double ms = now_ms() - t0;
	if (written < 0)
		return fail("PAGEMAP_SCAN");
	long again = scan(pagemap, m);
	if (written != expected || again != 0) {
		printf("{\"ok\":false,\"error\":\"PAGEMAP_SCAN reported %ld written pages (expected %ld), then %ld (expected 0)\"}\n",
		       written, expected, again);
		return 1;
	}
	printf("{\"ok\":true,\"pages\":%lu,\"written\":%ld,\"scanMs\":%.3f}\n", BYTES / PAGE, written, ms);
	return 0;
}
