// pm-wptrack: tracks which pages of a running pod are written, without soft-dirty (this kernel has none),
// with asynchronous userfaultfd write-protection read back by the PAGEMAP_SCAN ioctl.
//
//   pm-wptrack --pid ROOT      (then commands on stdin, one per line; one JSON line answers each)
//
//   arm [FILE]   For every process of ROOT's pid namespace not tracked yet: creates a userfaultfd in it (the
//                process runs the userfaultfd syscall once, made to by ptrace from a syscall instruction of
//                its vDSO; all its threads are stopped for that moment), takes a copy of it (pidfd_getfd),
//                and closes it there again: the process keeps no new file descriptor. Then registers every
//                private writable mapping not registered yet for write-protection, and re-protects every
//                registered page, so that from now on each write marks its page written. With FILE, first
//                writes there what was written since the previous `arm` — written pages, and whole mappings
//                registered only now — as records {u32 vpid, u32 0, u64 start, u64 end}.
//                  -> {"ok":true,"processes":N,"ranges":R,"bytes":B,"writtenBytes":W}
//   final FILE   With the pod frozen: writes to FILE the ranges whose pages were not written since the last
//                `arm` — registered mappings (still write-protect-registered by the kernel's account, so a
//                mapping replaced since is never taken for clean) minus written pages — as records
//                {u32 vpid, u32 0, u64 start, u64 end},
//                vpid being the process's pid inside the pod. Then drops every userfaultfd: the mappings
//                are plain again. -> {"ok":true,"cleanBytes":C,"writtenBytes":W}
//   (EOF)        Drops every userfaultfd and exits 0.
//
// Errors: {"ok":false,"error":"..."} for a failed command (nothing is left half-done in the pod), exit 1
// on a usage error.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pidns.h"

#include "uffdwp.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define PAGE 4096UL
#define MAX_PROCS 4096
#define MAX_RANGES 65536
#define VEC 4096

struct range {
	uint64_t start, end;
};

struct proc {
	int pid, vpid, uffd, pagemap;
	struct range *ranges;
	int nranges;
};

static struct proc procs[MAX_PROCS];
static int nprocs;
static char err[512];

static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, sizeof(err), fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- one syscall run by the target, from a syscall instruction of its vDSO ---- */

static uint64_t vdso_syscall(int pid)
{
	char path[64], line[4096];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "r");
	uint64_t start = 0, end = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "[vdso]")) {
			sscanf(line, "%lx-%lx", &start, &end);
			break;
		}
	fclose(f);
	if (!start || end - start > (1 << 20))
		return 0;
	unsigned char *buf = malloc(end - start);
	struct iovec l = { buf, end - start }, r = { (void *)start, end - start };
	ssize_t got = buf ? process_vm_readv(pid, &l, 1, &r, 1, 0) : -1;
	uint64_t at = 0;
	for (ssize_t i = 0; i + 1 < got; i++)
		if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
			at = start + (uint64_t)i;
			break;
		}
	free(buf);
	return at;
}

static int threads_of(int pid, int *tids, int max)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	int n = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d)) && n < max)
		if (atoi(e->d_name) > 0)
			tids[n++] = atoi(e->d_name);
	closedir(d);
	return n;
}

static int wait_stop(int tid)
{
	int st;
	if (waitpid(tid, &st, __WALL) != tid || !WIFSTOPPED(st))
		return -1;
	return WSTOPSIG(st);
}

static long run_syscall(int pid, uint64_t insn, long nr, long a1, long a2)
{
	struct user_regs_struct r;
	if (ptrace(PTRACE_GETREGS, pid, 0, &r))
		return -errno;
	r.rax = (unsigned long)nr;
	r.orig_rax = (unsigned long)-1; // not a syscall being restarted: the kernel must not rewind it
	r.rdi = (unsigned long)a1;
	r.rsi = (unsigned long)a2;
	r.rip = insn;
	if (ptrace(PTRACE_SETREGS, pid, 0, &r) || ptrace(PTRACE_SINGLESTEP, pid, 0, 0))
		return -errno;
	if (wait_stop(pid) != SIGTRAP)
		return -EIO;
	if (ptrace(PTRACE_GETREGS, pid, 0, &r))
		return -errno;
	return (long)r.rax;
}

/* A userfaultfd of pid's memory, owned by this process; the pod's process keeps no new descriptor. */
static int steal_uffd(int pid)
{
	uint64_t insn = vdso_syscall(pid);
	if (!insn)
		return fail("pid %d: no syscall instruction in its vDSO", pid);
	int tids[1024];
	int n = threads_of(pid, tids, 1024);
	if (n <= 0)
		return fail("pid %d: no threads", pid);
	int seized = 0, out = -1;
	// Every thread stops: none may run while one of them is made to run a syscall.
	for (; seized < n; seized++) {
		if (ptrace(PTRACE_SEIZE, tids[seized], 0, 0) || ptrace(PTRACE_INTERRUPT, tids[seized], 0, 0)) {
			fail("pid %d: ptrace thread %d: %s", pid, tids[seized], strerror(errno));
			goto detach;
		}
		if (wait_stop(tids[seized]) < 0) {
			fail("pid %d: thread %d did not stop", pid, tids[seized]);
			seized++;
			goto detach;
		}
	}
	struct user_regs_struct saved;
	if (ptrace(PTRACE_GETREGS, pid, 0, &saved)) {
		fail("pid %d: registers: %s", pid, strerror(errno));
		goto detach;
	}
	long fd = run_syscall(pid, insn, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0);
	/*
	 * A process without CAP_SYS_PTRACE (a pod running as a user) may not handle kernel-mode faults while
	 * vm.unprivileged_userfaultfd is 0, but may ask for user-mode faults only. Nothing here handles a fault:
	 * asynchronous write-protection is resolved in the kernel's write-fault path before any handler would
	 * run, for writes from user and kernel mode alike, so the written page is recorded either way.
	 */
	if (fd == -EPERM)
		fd = run_syscall(pid, insn, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, 0);
	if (fd >= 0) {
		int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
		out = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
		if (out < 0)
			fail("pid %d: taking its userfaultfd: %s", pid, strerror(errno));
		if (pidfd >= 0)
			close(pidfd);
		long closed = run_syscall(pid, insn, SYS_close, fd, 0);
		if (closed != 0 && out >= 0) {
			fail("pid %d: closing its userfaultfd copy: %s", pid, strerror((int)-closed));
			close(out);
			out = -1;
		}
	} else {
		fail("pid %d: userfaultfd: %s", pid, strerror((int)-fd));
	}
	if (ptrace(PTRACE_SETREGS, pid, 0, &saved) && out >= 0) {
		fail("pid %d: restoring registers: %s", pid, strerror(errno));
		close(out);
		out = -1;
	}
detach:
	for (int i = 0; i < seized; i++)
		ptrace(PTRACE_DETACH, tids[i], 0, 0);
	return out;
}

/* ---- tracking ---- */

static int registered(struct proc *p, uint64_t start, uint64_t end)
{
	for (int i = 0; i < p->nranges; i++)
		if (p->ranges[i].start <= start && end <= p->ranges[i].end)
			return 1;
	return 0;
}

static void add_proc(int pid, void *arg)
{
	(void)arg;
	for (int i = 0; i < nprocs; i++)
		if (procs[i].pid == pid)
			return;
	if (nprocs >= MAX_PROCS || err[0])
		return;
	struct proc *p = &procs[nprocs];
	memset(p, 0, sizeof(*p));
	p->pid = pid;
	p->vpid = pod_pid(pid);
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	p->pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (p->vpid < 0 || p->pagemap < 0)
		return; // exited meanwhile
	p->uffd = steal_uffd(pid);
	if (p->uffd < 0) {
		close(p->pagemap);
		return;
	}
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (ioctl(p->uffd, UFFDIO_API, &api)) {
		fail("pid %d: UFFDIO_API: %s", pid, strerror(errno));
		close(p->uffd);
		close(p->pagemap);
		return;
	}
	p->ranges = calloc(MAX_RANGES, sizeof(struct range));
	nprocs++;
}

static void put_range(FILE *out, uint32_t vpid, uint64_t start, uint64_t end)
{
	uint32_t head[2] = { vpid, 0 };
	uint64_t r[2] = { start, end };
	fwrite(head, sizeof(head), 1, out);
	fwrite(r, sizeof(r), 1, out);
}

/*
 * Registers p's private writable mappings not registered yet; mappings that refuse stay untracked. Newly
 * registered ones go to `out` (when given) whole: nothing of them was read before. Their bytes, returned.
 */
static long register_new(struct proc *p, FILE *out)
{
	long bytes = 0;
	char path[64], line[4096];
	snprintf(path, sizeof(path), "/proc/%d/maps", p->pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, end;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &start, &end, perms) != 3 || perms[1] != 'w' || perms[3] != 'p' ||
		    strstr(line, "[vvar") || strstr(line, "[vdso") || strstr(line, "[vsyscall") || registered(p, start, end) ||
		    p->nranges >= MAX_RANGES)
			continue;
		struct uffdio_register reg = { .range = { start, end - start }, .mode = UFFDIO_REGISTER_MODE_WP };
		if (ioctl(p->uffd, UFFDIO_REGISTER, &reg))
			continue;
		struct uffdio_writeprotect wp = { .range = { start, end - start }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
		if (ioctl(p->uffd, UFFDIO_WRITEPROTECT, &wp))
			continue;
		p->ranges[p->nranges++] = (struct range){ start, end };
		if (out)
			put_range(out, (uint32_t)p->vpid, start, end);
		bytes += (long)(end - start);
	}
	fclose(f);
	return bytes;
}

static struct page_region vec[VEC];

/* Calls each(start, end) for the written pages of [start, end), re-protecting them; bytes written, or -1. */
static long scan(struct proc *p, uint64_t start, uint64_t end, void (*each)(uint64_t, uint64_t, void *), void *arg)
{
	long bytes = 0;
	while (start < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, .start = start, .end = end,
			.vec = (uintptr_t)vec, .vec_len = VEC, .category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
		};
		long n = ioctl(p->pagemap, PAGEMAP_SCAN, &a);
		if (n < 0)
			return -1;
		for (long i = 0; i < n; i++) {
			bytes += (long)(vec[i].end - vec[i].start);
			if (each)
				each(vec[i].start, vec[i].end, arg);
		}
		if (a.walk_end <= start)
			break;
		start = a.walk_end;
	}
	return bytes;
}

static void drop_all(void)
{
	for (int i = 0; i < nprocs; i++) {
		close(procs[i].uffd);
		close(procs[i].pagemap);
		free(procs[i].ranges);
	}
	nprocs = 0;
}

struct written_ctx {
	FILE *out;
	uint32_t vpid;
};

static void put_written(uint64_t start, uint64_t end, void *arg)
{
	struct written_ctx *c = arg;
	if (c->out)
		put_range(c->out, c->vpid, start, end);
}

static int cmd_arm(int root, const char *file)
{
	err[0] = 0;
	FILE *out = file ? fopen(file, "w") : NULL;
	if (file && !out)
		return fail("%s: %s", file, strerror(errno));
	if (for_each_pid_in_ns(root, add_proc, NULL)) {
		if (out)
			fclose(out);
		return fail("pod init %d: %s", root, strerror(errno));
	}
	if (err[0]) {
		if (out)
			fclose(out);
		return -1;
	}
	long ranges = 0, bytes = 0, written = 0;
	for (int i = 0; i < nprocs; i++) {
		struct proc *p = &procs[i];
		int old = p->nranges;
		// Processes new to tracking were never read: every mapping of theirs counts as written.
		written += register_new(p, out);
		struct written_ctx c = { out, (uint32_t)p->vpid };
		for (int j = 0; j < old; j++) {
			long w = scan(p, p->ranges[j].start, p->ranges[j].end, put_written, &c);
			if (w < 0) {
				if (out)
					fclose(out);
				return fail("pid %d: PAGEMAP_SCAN: %s", p->pid, strerror(errno));
			}
			written += w;
		}
		for (int j = 0; j < p->nranges; j++)
			bytes += (long)(p->ranges[j].end - p->ranges[j].start);
		ranges += p->nranges;
	}
	if (out && fclose(out))
		return fail("%s: %s", file, strerror(errno));
	printf("{\"ok\":true,\"processes\":%d,\"ranges\":%ld,\"bytes\":%ld,\"writtenBytes\":%ld}\n", nprocs, ranges, bytes, written);
	return 0;
}

struct clean_ctx {
	FILE *out;
	uint32_t vpid;
	uint64_t cursor;
	long clean;
};

static void emit(struct clean_ctx *c, uint64_t start, uint64_t end)
{
	if (end <= start)
		return;
	uint32_t head[2] = { c->vpid, 0 };
	uint64_t r[2] = { start, end };
	fwrite(head, sizeof(head), 1, c->out);
	fwrite(r, sizeof(r), 1, c->out);
	c->clean += (long)(end - start);
}

static void written(uint64_t start, uint64_t end, void *arg)
{
	struct clean_ctx *c = arg;
	emit(c, c->cursor, start);
	c->cursor = end;
}

/* Bytes of [start, end) whose mapping is registered for asynchronous write-protection (PAGE_IS_WPALLOWED). */
static long wp_allowed_bytes(struct proc *p, uint64_t start, uint64_t end)
{
	long bytes = 0;
	while (start < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .start = start, .end = end, .vec = (uintptr_t)vec, .vec_len = VEC,
			.category_mask = PAGE_IS_WPALLOWED, .return_mask = PAGE_IS_WPALLOWED,
		};
		long n = ioctl(p->pagemap, PAGEMAP_SCAN, &a);
		if (n < 0)
			return -1;
		for (long i = 0; i < n; i++)
			bytes += (long)(vec[i].end - vec[i].start);
		if (a.walk_end <= start)
			break;
		start = a.walk_end;
	}
	return bytes;
}

/*
 * The mappings are read from /proc/PID/maps, not smaps: smaps walks every page table to count Rss and Pss
 * (~6 ms for each PostgreSQL process, which maps the whole shared buffer pool), and all of it ran inside the
 * freeze, with CRIU waiting. Whether a mapping is still registered comes from PAGEMAP_SCAN instead.
 */
static int cmd_final(const char *file)
{
	FILE *out = fopen(file, "w");
	if (!out)
		return fail("%s: %s", file, strerror(errno));
	long clean = 0, dirty = 0;
	for (int i = 0; i < nprocs; i++) {
		struct proc *p = &procs[i];
		char path[64], line[4096];
		snprintf(path, sizeof(path), "/proc/%d/maps", p->pid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue; // gone: none of its pages counts as clean
		while (fgets(line, sizeof(line), f)) {
			uint64_t start, end;
			if (sscanf(line, "%lx-%lx ", &start, &end) != 2)
				continue;
			// Only a mapping registered by an `arm` (and so write-protected since), and registered still.
			if (!registered(p, start, end))
				continue;
			long allowed = wp_allowed_bytes(p, start, end);
			if (allowed < 0) {
				fclose(f);
				fclose(out);
				return fail("pid %d: PAGEMAP_SCAN: %s", p->pid, strerror(errno));
			}
			if ((uint64_t)allowed != end - start)
				continue;
			struct clean_ctx c = { out, (uint32_t)p->vpid, start, 0 };
			long w = scan(p, start, end, written, &c);
			if (w < 0) {
				fclose(f);
				fclose(out);
				return fail("pid %d: PAGEMAP_SCAN: %s", p->pid, strerror(errno));
			}
			emit(&c, c.cursor, end);
			clean += c.clean;
			dirty += w;
		}
		fclose(f);
	}
	if (fclose(out))
		return fail("%s: %s", file, strerror(errno));
	drop_all();
	printf("{\"ok\":true,\"cleanBytes\":%ld,\"writtenBytes\":%ld}\n", clean, dirty);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 || strcmp(argv[1], "--pid")) {
		fprintf(stderr, "usage: pm-wptrack --pid ROOT\n");
		return 1;
	}
	int root = atoi(argv[2]);
	char line[4096];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		err[0] = 0;
		int r;
		if (!strcmp(line, "arm"))
			r = cmd_arm(root, NULL);
		else if (!strncmp(line, "arm ", 4))
			r = cmd_arm(root, line + 4);
		else if (!strncmp(line, "final ", 6))
			r = cmd_final(line + 6);
		else
			r = fail("unknown command: %s", line);
		if (r) {
			for (char *c = err; *c; c++)
				if (*c == '"' || *c == '\\')
					*c = '\'';
			printf("{\"ok\":false,\"error\":\"%s\"}\n", err);
		}
	}
	drop_all();
	return 0;
}
