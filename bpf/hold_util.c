/* pm-hold helpers: one-line failures, libbpf log capture, network namespaces, bpffs, JSON fragments. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pm-hold.h"

#define BPFFS_ROOT "/sys/fs/bpf"
#define NETNS_DIR "/run/netns"

extern const char *pm_cmd_name;

/* libbpf's last non-empty log line: verifier and pinning errors are multi-line, the cause is at the end. */
static char libbpf_last[512];

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[sizeof(libbpf_last)];
	int n;

	if (level == LIBBPF_DEBUG)
		return 0;
	n = vsnprintf(line, sizeof(line), fmt, ap);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
	if (n > 0)
		memcpy(libbpf_last, line, sizeof(line));
	return 0;
}

void pm_capture_libbpf_log(void)
{
	libbpf_set_print(libbpf_log);
}

static __attribute__((noreturn)) void vfail(int code, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	for (char *p = libbpf_last; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	if (libbpf_last[0])
		fprintf(stderr, "pm-hold %s: %s (%s)\n", pm_cmd_name, msg, libbpf_last);
	else
		fprintf(stderr, "pm-hold %s: %s\n", pm_cmd_name, msg);
	exit(code);
}

void pm_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(PM_EXIT_FAIL, fmt, ap);
}

void pm_usage_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(PM_EXIT_USAGE, fmt, ap);
}

const char *pm_need(const char *value, const char *flag)
{
	if (!value || !*value)
		pm_usage_fail("%s is required", flag);
	return value;
}

int pm_enter_netns(const char *name)
{
	char path[PATH_MAX];
	int fd;

	if (strchr(name, '/'))
		snprintf(path, sizeof(path), "%s", name);
	else if (snprintf(path, sizeof(path), NETNS_DIR "/%s", name) >= (int)sizeof(path))
		pm_usage_fail("--netns is too long");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return -ENOENT;
		pm_fail("open %s: %s", path, strerror(errno));
	}
	if (setns(fd, CLONE_NEWNET) < 0)
		pm_fail("setns %s: %s", path, strerror(errno));
	close(fd);
	return 0;
}

static bool is_bpffs(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

/* mkdir -p below an existing bpffs directory (bpffs supports plain mkdir). */
static void mkdirs(const char *dir)
{
	char buf[PATH_MAX];

	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			pm_fail("mkdir %s: %s", buf, strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		pm_fail("mkdir %s: %s", buf, strerror(errno));
}

void pm_prepare_pin_dir(const char *dir)
{
	if (dir[0] != '/')
		pm_usage_fail("--pin must be an absolute path on bpffs (e.g. " BPFFS_ROOT "/podmotion/POD)");
	if (strncmp(dir, BPFFS_ROOT "/", sizeof(BPFFS_ROOT)) == 0 && !is_bpffs(BPFFS_ROOT)) {
		if (mount("bpf", BPFFS_ROOT, "bpf", 0, "mode=0700") < 0 && !is_bpffs(BPFFS_ROOT))
			pm_fail("mount bpffs on " BPFFS_ROOT ": %s", strerror(errno));
	}
	mkdirs(dir);
	if (!is_bpffs(dir))
		pm_fail("%s is not on a bpffs mount", dir);
}

void pm_pin_path(char *buf, const char *dir, const char *name)
{
	if (snprintf(buf, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		pm_usage_fail("--pin is too long");
}

int pm_open_pinned(const char *dir, const char *name)
{
	char path[PATH_MAX];
	int fd;

	pm_pin_path(path, dir, name);
	fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}

struct pm_ctl pm_read_ctl(int fd)
{
	struct pm_ctl ctl = {};
	__u32 key = 0;

	if (bpf_map_lookup_elem(fd, &key, &ctl))
		pm_fail("read pm_ctl: %s", strerror(errno));
	return ctl;
}

void pm_write_ctl(int fd, const struct pm_ctl *ctl)
{
	__u32 key = 0;

	if (bpf_map_update_elem(fd, &key, ctl, BPF_ANY))
		pm_fail("write pm_ctl: %s", strerror(errno));
}

int pm_open_pinned_or_fail(const char *dir, const char *name)
{
	int fd = pm_open_pinned(dir, name);

	if (fd == -ENOENT)
		pm_fail("no hold pinned at %s (run pm-hold attach first)", dir);
	if (fd < 0)
		pm_fail("open %s/%s: %s", dir, name, strerror(-fd));
	return fd;
}

__u32 pm_parse_ipv4(const char *text, const char *what)
{
	struct in_addr a;

	if (!text || inet_pton(AF_INET, text, &a) != 1)
		pm_usage_fail("%s must be an IPv4 address like 10.244.1.10", what);
	return a.s_addr;
}

void pm_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* Mode bits as the names `pm-hold set --mode` takes: ["zw","drop-in","drop-out"]. */
void pm_json_mode(FILE *f, __u32 mode)
{
	const char *sep = "";

	fputc('[', f);
	if (mode & PM_MODE_ZERO_WINDOW) {
		fprintf(f, "%s\"zw\"", sep);
		sep = ",";
	}
	if (mode & PM_MODE_DROP_TO_POD) {
		fprintf(f, "%s\"drop-in\"", sep);
		sep = ",";
	}
	if (mode & PM_MODE_DROP_FROM_POD)
		fprintf(f, "%s\"drop-out\"", sep);
	fputc(']', f);
}

void pm_json_addr(FILE *f, __u32 addr_be, __u16 port_be)
{
	char ip[INET_ADDRSTRLEN];
	struct in_addr a = { .s_addr = addr_be };

	inet_ntop(AF_INET, &a, ip, sizeof(ip));
	fprintf(f, "\"%s:%u\"", ip, ntohs(port_be));
}

/* CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns() and of Node's process.hrtime. */
__u64 pm_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ull + (__u64)ts.tv_nsec;
}
