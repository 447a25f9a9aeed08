/* pm-hold stats: mode, summed per-CPU counters and every recorded flow, with its quiescence. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pm-hold.h"

static bool flow_open(const struct pm_flow *f)
{
	return !((f->from_pod.flags | f->to_pod.flags) & (PM_SIDE_FIN | PM_SIDE_RST));
}

/* Bytes one direction sent that the other has not acknowledged yet (as far as the hook saw). */
static __u32 unacked(const struct pm_side *sender, const struct pm_side *receiver)
{
	if (!(sender->flags & PM_SIDE_SEEN) || !(receiver->flags & PM_SIDE_ACK))
		return 0;
	__s32 d = (__s32)(sender->nxt - receiver->ack);
	return d > 0 ? (__u32)d : 0;
}

/*
 * Nothing in flight either way and the peer was last told window 0: a freeze starting now costs neither side a
 * retransmission timeout, and the peer will not send before the window reopens.
 */
static bool quiesced(const struct pm_flow *f)
{
	return (f->from_pod.flags & PM_SIDE_ZW) && f->from_pod.zw_ack == f->from_pod.ack &&
	       unacked(&f->to_pod, &f->from_pod) == 0 && unacked(&f->from_pod, &f->to_pod) == 0;
}

static void print_side(const struct pm_side *s)
{
	printf("{\"seen\":%s,\"nxt\":%u,\"ack\":%u,\"win\":%u,\"packets\":%llu,\"lastUs\":%llu",
	       (s->flags & PM_SIDE_SEEN) ? "true" : "false", s->nxt, s->ack, s->win,
	       (unsigned long long)s->packets, (unsigned long long)(s->last_ns / 1000));
	if (s->flags & PM_SIDE_TS)
		printf(",\"tsval\":%u,\"tsecr\":%u", s->tsval, s->tsecr);
	if (s->flags & PM_SIDE_SYN)
		printf(",\"isn\":%u", s->isn);
	if (s->flags & PM_SIDE_WSCALE)
		printf(",\"wscale\":%u", s->wscale);
	if (s->flags & PM_SIDE_ZW)
		printf(",\"zeroWindowAck\":%u", s->zw_ack);
	printf(",\"ackValid\":%s,\"fin\":%s,\"rst\":%s}", (s->flags & PM_SIDE_ACK) ? "true" : "false",
	       (s->flags & PM_SIDE_FIN) ? "true" : "false", (s->flags & PM_SIDE_RST) ? "true" : "false");
}

static void print_counters(int fd)
{
	int ncpu = libbpf_num_possible_cpus();
	struct pm_counters sum = {};
	__u32 key = 0;

	if (ncpu <= 0)
		pm_fail("count CPUs: %s", strerror(-ncpu));
	struct pm_counters *per = calloc((size_t)ncpu, sizeof(*per));
	if (!per || bpf_map_lookup_elem(fd, &key, per))
		pm_fail("read pm_cnt: %s", strerror(errno));
	for (int c = 0; c < ncpu; c++) {
		sum.dropped_to_pod += per[c].dropped_to_pod;
		sum.dropped_from_pod += per[c].dropped_from_pod;
		sum.rst_to_pod += per[c].rst_to_pod;
		sum.rst_from_pod += per[c].rst_from_pod;
		sum.zero_window_rewrites += per[c].zero_window_rewrites;
		sum.mark_exempt += per[c].mark_exempt;
		sum.tracked_to_pod += per[c].tracked_to_pod;
		sum.tracked_from_pod += per[c].tracked_from_pod;
	}
	free(per);
	printf("{\"droppedToPod\":%llu,\"droppedFromPod\":%llu,\"rstToPod\":%llu,\"rstFromPod\":%llu,"
	       "\"zeroWindowRewrites\":%llu,\"markExempt\":%llu,\"trackedToPod\":%llu,\"trackedFromPod\":%llu}",
	       sum.dropped_to_pod, sum.dropped_from_pod, sum.rst_to_pod, sum.rst_from_pod,
	       sum.zero_window_rewrites, sum.mark_exempt, sum.tracked_to_pod, sum.tracked_from_pod);
}

int pm_cmd_stats(const struct pm_args *a)
{
	const char *dir = pm_need(a->pin, "--pin");
	int ctl_fd = pm_open_pinned_or_fail(dir, PM_PIN_CTL);
	int cnt_fd = pm_open_pinned_or_fail(dir, PM_PIN_CNT);
	int flows_fd = pm_open_pinned_or_fail(dir, PM_PIN_FLOWS);
	struct pm_ctl ctl = pm_read_ctl(ctl_fd);
	struct pm_flow_key key, next;
	struct pm_flow flow;
	const char *sep = "";
	void *prev = NULL;

	printf("{\"monoUs\":%llu,\"mode\":", (unsigned long long)(pm_mono_ns() / 1000));
	pm_json_mode(stdout, ctl.mode);
	printf(",\"counters\":");
	print_counters(cnt_fd);
	printf(",\"flows\":[");
	/* An LRU map never holds more than max_entries keys; the bound also stops a walk that keeps restarting. */
	for (int n = 0; n < PM_FLOWS_MAX && bpf_map_get_next_key(flows_fd, prev, &next) == 0; n++) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(flows_fd, &key, &flow))
			continue; /* evicted meanwhile */
		printf("%s{\"pod\":", sep);
		pm_json_addr(stdout, key.pod_addr, key.pod_port);
		printf(",\"peer\":");
		pm_json_addr(stdout, key.peer_addr, key.peer_port);
		printf(",\"fromPod\":");
		print_side(&flow.from_pod);
		printf(",\"toPod\":");
		print_side(&flow.to_pod);
		printf(",\"open\":%s,\"quiesced\":%s,\"unackedFromPeer\":%u,\"unackedFromPod\":%u}",
		       flow_open(&flow) ? "true" : "false", quiesced(&flow) ? "true" : "false",
		       unacked(&flow.to_pod, &flow.from_pod), unacked(&flow.from_pod, &flow.to_pod));
		sep = ",";
	}
	printf("]}\n");
	return 0;
}

