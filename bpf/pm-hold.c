/*
 * pm-hold: loads, arms, reads and removes the traffic hold of hold.bpf.c on a pod's node-side veth.
 * Each subcommand is one short process: one JSON line on stdout on success, one line on stderr and a
 * non-zero exit otherwise. Usage: see usage() below or bpf/README.md.
 *
 * The BPF object is embedded (bpftool gen skeleton), so the binary and its programs can never disagree.
 * The tc filters hold the programs; only the maps are pinned, under --pin DIR on bpffs, and they outlive
 * this process: `set` and `stats` work on the pins alone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pm-hold.h"
#include "hold.skel.h"

const char *pm_cmd_name = "";

static void usage(FILE *f)
{
	fputs("usage: pm-hold attach --netns NAME --dev IFNAME --pod-ip A.B.C.D --pin DIR\n"
	      "       pm-hold set --pin DIR --mode zw,drop-in,drop-out|none\n"
	      "       pm-hold stats --pin DIR\n"
	      "       pm-hold reopen --netns NAME (--pin DIR | --flows -) [--pod-ip A.B.C.D] [--elicit]\n"
	      "       pm-hold kick --netns NAME (--pin DIR | --flows -) [--pod-ip A.B.C.D]\n"
	      "       pm-hold detach --netns NAME --dev IFNAME --pin DIR\n"
	      "drop-in drops packets to the pod, drop-out packets from the pod; zw zeroes the pod's TCP window.\n",
	      f);
}

/* ---- tc plumbing ---- */

/*
 * memset, not an initializer: libbpf rejects (EINVAL, before any netlink) an opts struct whose bytes after its
 * last known field are not zero, and the 4 padding bytes after `parent` are not guaranteed zero otherwise.
 */
static void tc_hook(struct bpf_tc_hook *h, int ifindex, enum bpf_tc_attach_point point)
{
	memset(h, 0, sizeof(*h));
	h->sz = sizeof(*h);
	h->ifindex = ifindex;
	h->attach_point = point;
}

/* Id of the program in our filter slot, 0 if the slot is empty. */
static __u32 filter_prog_id(int ifindex, enum bpf_tc_attach_point point)
{
	struct bpf_tc_hook h;
	tc_hook(&h, ifindex, point);
	LIBBPF_OPTS(bpf_tc_opts, q, .handle = PM_TC_HANDLE, .priority = PM_TC_PRIO);
	int err = bpf_tc_query(&h, &q);

	if (err == -ENOENT || err == -EINVAL)
		return 0; /* no filter there (EINVAL: no clsact qdisc at all) */
	if (err)
		pm_fail("query tc filter: %s", strerror(-err));
	return q.prog_id;
}

static __u32 attach_prog(int ifindex, enum bpf_tc_attach_point point, struct bpf_program *prog)
{
	struct bpf_tc_hook h;
	tc_hook(&h, ifindex, point);
	LIBBPF_OPTS(bpf_tc_opts, o, .handle = PM_TC_HANDLE, .priority = PM_TC_PRIO,
		    .prog_fd = bpf_program__fd(prog), .flags = BPF_TC_F_REPLACE);
	int err = bpf_tc_attach(&h, &o);

	if (err)
		pm_fail("attach %s: %s", bpf_program__name(prog), strerror(-err));
	return o.prog_id;
}

/* True when the filter in our slot runs one of our programs: detach never removes someone else's filter. */
static bool is_our_prog(__u32 id)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);
	bool ours;

	if (fd < 0)
		return false;
	ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strncmp(info.name, "hold_", 5) == 0;
	close(fd);
	return ours;
}

/* ---- subcommands ---- */

static void set_pins(struct hold *skel, const char *dir)
{
	struct bpf_map *maps[] = { skel->maps.pm_ctl, skel->maps.pm_cnt, skel->maps.pm_flows };
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		pm_pin_path(path, dir, bpf_map__name(maps[i]));
		if (bpf_map__set_pin_path(maps[i], path))
			pm_fail("pin path %s: %s", path, strerror(errno));
	}
}

/*
 * Idempotent: pinned maps are reused (mode, counters and flows survive), the programs are reloaded and swap
 * in atomically through BPF_TC_F_REPLACE, so a second attach (or one with a new --pod-ip) never opens a gap.
 */
static int cmd_attach(const struct pm_args *a)
{
	__u32 addr = pm_parse_ipv4(a->pod_ip, "--pod-ip");
	const char *dir = pm_need(a->pin, "--pin");
	struct hold *skel;
	int err, ifindex;

	pm_need(a->netns, "--netns");
	pm_need(a->dev, "--dev");
	pm_prepare_pin_dir(dir);
	if (pm_enter_netns(a->netns) < 0)
		pm_fail("network namespace %s does not exist", a->netns);
	ifindex = (int)if_nametoindex(a->dev);
	if (!ifindex)
		pm_fail("no device %s in network namespace %s", a->dev, a->netns);

	skel = hold__open();
	if (!skel)
		pm_fail("open embedded BPF object: %s", strerror(errno));
	skel->rodata->pod_addr = addr;
	set_pins(skel, dir);
	err = hold__load(skel);
	if (err)
		pm_fail("load BPF programs: %s (maps pinned by an incompatible pm-hold? run detach first)", strerror(-err));

	struct bpf_tc_hook clsact;
	tc_hook(&clsact, ifindex, BPF_TC_INGRESS);
	err = bpf_tc_hook_create(&clsact); /* creates clsact, which serves ingress and egress */
	if (err && err != -EEXIST)
		pm_fail("create clsact qdisc on %s: %s", a->dev, strerror(-err));
	bool qdisc_created = err == 0;
	bool replaced = filter_prog_id(ifindex, BPF_TC_INGRESS) || filter_prog_id(ifindex, BPF_TC_EGRESS);
	__u32 in_id = attach_prog(ifindex, BPF_TC_INGRESS, skel->progs.hold_from_pod);
	__u32 out_id = attach_prog(ifindex, BPF_TC_EGRESS, skel->progs.hold_to_pod);

	int ctl_fd = bpf_map__fd(skel->maps.pm_ctl);
	struct pm_ctl ctl = pm_read_ctl(ctl_fd);
	if (qdisc_created) {
		ctl.flags |= PM_CTL_QDISC_CREATED;
		pm_write_ctl(ctl_fd, &ctl);
	}

	printf("{\"attached\":true,\"netns\":");
	pm_json_str(stdout, a->netns);
	printf(",\"dev\":");
	pm_json_str(stdout, a->dev);
	printf(",\"ifindex\":%d,\"podIp\":", ifindex);
	pm_json_str(stdout, a->pod_ip);
	printf(",\"pin\":");
	pm_json_str(stdout, dir);
	printf(",\"qdiscCreated\":%s,\"replaced\":%s,\"progIds\":{\"fromPod\":%u,\"toPod\":%u},\"mode\":",
	       qdisc_created ? "true" : "false", replaced ? "true" : "false", in_id, out_id);
	pm_json_mode(stdout, ctl.mode);
	printf("}\n");
	hold__destroy(skel);
	return 0;
}

static __u32 parse_mode(const char *text)
{
	char buf[128];
	__u32 mode = 0;

	if (strcmp(text, "none") == 0)
		return 0;
	if (snprintf(buf, sizeof(buf), "%s", text) >= (int)sizeof(buf))
		pm_usage_fail("--mode is too long");
	for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "zw") == 0)
			mode |= PM_MODE_ZERO_WINDOW;
		else if (strcmp(tok, "drop-in") == 0)
			mode |= PM_MODE_DROP_TO_POD;
		else if (strcmp(tok, "drop-out") == 0)
			mode |= PM_MODE_DROP_FROM_POD;
		else
			pm_usage_fail("unknown mode \"%s\": use none or a list of zw, drop-in, drop-out", tok);
	}
	return mode;
}

static int cmd_set(const struct pm_args *a)
{
	__u32 mode = parse_mode(pm_need(a->mode, "--mode"));
	int fd = pm_open_pinned_or_fail(pm_need(a->pin, "--pin"), PM_PIN_CTL);
	struct pm_ctl ctl = pm_read_ctl(fd);
	__u32 previous = ctl.mode;

	ctl.mode = mode;
	pm_write_ctl(fd, &ctl);
	/* Taken right after the update: the moment the datapath starts obeying the new mode. */
	__u64 now = pm_mono_ns();
	printf("{\"mode\":");
	pm_json_mode(stdout, mode);
	printf(",\"previous\":");
	pm_json_mode(stdout, previous);
	printf(",\"monoUs\":%llu}\n", (unsigned long long)(now / 1000));
	return 0;
}

static void remove_pins(const char *dir, bool *unpinned)
{
	const char *names[] = { PM_PIN_CTL, PM_PIN_CNT, PM_PIN_FLOWS };
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		pm_pin_path(path, dir, names[i]);
		if (unlink(path) == 0)
			*unpinned = true;
		else if (errno != ENOENT)
			pm_fail("unpin %s: %s", path, strerror(errno));
	}
	if (rmdir(dir) < 0 && errno != ENOENT)
		pm_fail("remove %s: %s", dir, strerror(errno));
}

/* Idempotent; a namespace or device that is already gone took its filters with it. */
static int cmd_detach(const struct pm_args *a)
{
	const char *dir = pm_need(a->pin, "--pin");
	int ctl_fd = pm_open_pinned(dir, PM_PIN_CTL);
	bool created = ctl_fd >= 0 && (pm_read_ctl(ctl_fd).flags & PM_CTL_QDISC_CREATED);
	bool netns_gone, dev_gone = false, qdisc_removed = false, unpinned = false;
	int removed = 0;

	pm_need(a->dev, "--dev");
	netns_gone = pm_enter_netns(pm_need(a->netns, "--netns")) < 0;
	int ifindex = netns_gone ? 0 : (int)if_nametoindex(a->dev);
	dev_gone = !netns_gone && !ifindex;
	if (ifindex) {
		enum bpf_tc_attach_point points[] = { BPF_TC_INGRESS, BPF_TC_EGRESS };
		for (int i = 0; i < 2; i++) {
			__u32 id = filter_prog_id(ifindex, points[i]);
			if (!id || !is_our_prog(id))
				continue;
			struct bpf_tc_hook h;
			tc_hook(&h, ifindex, points[i]);
			LIBBPF_OPTS(bpf_tc_opts, o, .handle = PM_TC_HANDLE, .priority = PM_TC_PRIO);
			int err = bpf_tc_detach(&h, &o);
			if (err && err != -ENOENT)
				pm_fail("detach tc filter: %s", strerror(-err));
			removed += err == 0;
		}
		if (created) {
			struct bpf_tc_hook h;
			tc_hook(&h, ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
			int err = bpf_tc_hook_destroy(&h);
			if (err && err != -ENOENT && err != -EINVAL)
				pm_fail("remove clsact qdisc: %s", strerror(-err));
			qdisc_removed = err == 0;
		}
	}
	remove_pins(dir, &unpinned);
	printf("{\"detached\":true,\"filtersRemoved\":%d,\"qdiscRemoved\":%s,\"netnsGone\":%s,\"deviceGone\":%s,"
	       "\"unpinned\":%s}\n",
	       removed, qdisc_removed ? "true" : "false", netns_gone ? "true" : "false", dev_gone ? "true" : "false",
	       unpinned ? "true" : "false");
	return 0;
}

static void parse_args(int argc, char **argv, struct pm_args *a)
{
	static const struct option opts[] = {
		{ "netns", required_argument, NULL, 'n' }, { "dev", required_argument, NULL, 'd' },
		{ "pod-ip", required_argument, NULL, 'i' }, { "pin", required_argument, NULL, 'p' },
		{ "mode", required_argument, NULL, 'm' },  { "flows", required_argument, NULL, 'f' },
		{ "elicit", no_argument, NULL, 'e' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'n': a->netns = optarg; break;
		case 'd': a->dev = optarg; break;
		case 'i': a->pod_ip = optarg; break;
		case 'p': a->pin = optarg; break;
		case 'm': a->mode = optarg; break;
		case 'f': a->flows = optarg; break;
		case 'e': a->elicit = true; break;
		case 'h': usage(stdout); exit(0);
		default: pm_usage_fail("bad arguments (see pm-hold --help)");
		}
	}
	if (optind != argc)
		pm_usage_fail("unexpected argument \"%s\"", argv[optind]);
}

int main(int argc, char **argv)
{
	struct pm_args a = {};

	if (argc < 2 || argv[1][0] == '-') {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? PM_EXIT_USAGE : 0;
	}
	a.cmd = pm_cmd_name = argv[1];
	parse_args(argc - 1, argv + 1, &a);
	pm_capture_libbpf_log();
	if (strcmp(a.cmd, "attach") == 0)
		return cmd_attach(&a);
	if (strcmp(a.cmd, "set") == 0)
		return cmd_set(&a);
	if (strcmp(a.cmd, "stats") == 0)
		return pm_cmd_stats(&a);
	if (strcmp(a.cmd, "reopen") == 0)
		return pm_cmd_forge(&a, a.elicit ? PM_FORGE_ELICIT : PM_FORGE_REOPEN);
	if (strcmp(a.cmd, "kick") == 0)
		return pm_cmd_forge(&a, PM_FORGE_KICK);
	if (strcmp(a.cmd, "detach") == 0)
		return cmd_detach(&a);
	pm_usage_fail("unknown command (attach, set, stats, reopen, kick, detach)");
}
