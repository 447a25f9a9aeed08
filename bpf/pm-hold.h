/* Shared by the pm-hold controller's C files: argument set, failure reporting, netns and bpffs helpers. */
#ifndef PM_HOLD_CTL_H
#define PM_HOLD_CTL_H

#include <stdbool.h>
#include <stdio.h>
#include <linux/types.h>
#include "hold.h"

/* Names of the pinned maps inside the pin directory (the BPF object's map names). */
#define PM_PIN_CTL "pm_ctl"
#define PM_PIN_CNT "pm_cnt"
#define PM_PIN_FLOWS "pm_flows"

/* The tc filter both programs use: a fixed handle and priority make attach and detach idempotent. */
#define PM_TC_HANDLE 0xC114
#define PM_TC_PRIO 1

/* Exit codes: 1 an operation failed, 2 the command line was wrong. */
#define PM_EXIT_FAIL 1
#define PM_EXIT_USAGE 2

struct pm_args {
	const char *cmd;
	const char *netns;
	const char *dev;
	const char *pod_ip;
	const char *pin;
	const char *mode;
	const char *flows; /* reopen: "-" reads flow lines from stdin instead of the pinned map */
	bool elicit;       /* reopen: ask the pod to send the ACK itself (see hold_forge.c) */
};

/* Prints "pm-hold CMD: message" (plus libbpf's last complaint, if any) on stderr and exits. */
void pm_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void pm_usage_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* The value of a required flag, or a usage failure naming it. */
const char *pm_need(const char *value, const char *flag);
/* Routes libbpf's log into a small buffer so a failure still fits one stderr line. */
void pm_capture_libbpf_log(void);

/* Enters /run/netns/NAME (or NAME itself if it contains a '/'). Returns -ENOENT if it does not exist. */
int pm_enter_netns(const char *name);
/* Makes sure DIR exists on a bpffs, mounting /sys/fs/bpf first if nothing is mounted there. */
void pm_prepare_pin_dir(const char *dir);
/* DIR/NAME into buf (PATH_MAX), failing on overflow. */
void pm_pin_path(char *buf, const char *dir, const char *name);
/* Opens a pinned map; -errno if absent. */
int pm_open_pinned(const char *dir, const char *name);
/* The same, failing with "no hold pinned at DIR" when it is absent. */
int pm_open_pinned_or_fail(const char *dir, const char *name);
struct pm_ctl pm_read_ctl(int fd);
void pm_write_ctl(int fd, const struct pm_ctl *ctl);

__u32 pm_parse_ipv4(const char *text, const char *what);
void pm_json_str(FILE *f, const char *s);
void pm_json_mode(FILE *f, __u32 mode);
void pm_json_addr(FILE *f, __u32 addr_be, __u16 port_be);
__u64 pm_mono_ns(void);

int pm_cmd_stats(const struct pm_args *a);
/* The forged segments of hold_forge.c. */
enum pm_forge { PM_FORGE_REOPEN, PM_FORGE_ELICIT, PM_FORGE_KICK };
int pm_cmd_forge(const struct pm_args *a, enum pm_forge kind);

#endif
