/*
 * pm-hold reopen: tells every held peer that the pod's receive window is open again, at once.
 *
 * A peer that saw window 0 sits in persist mode and only asks again when its probe timer fires (RTO-based,
 * 200 ms at least, doubling: 200, 400, 800 ms ...). After the pod resumes, nothing the pod's kernel sends by
 * itself carries the open window in an acceptable segment: TCP_REPAIR_OFF's window probe has seq = snd_una-1,
 * which the peer rejects as out of window (it answers with a dup ACK and discards the segment, window and all).
 *
 * Default mode forges, from the flow map, the pure ACK the pod would send: seq = the pod's snd_nxt as last
 * seen, ack = its last ack, the real window field, and the timestamp option of its last segment (an equal
 * TSval passes the peer's PAWS check). The peer accepts the window update because ack == snd_una and
 * seq == snd_wl1 with a larger window (tcp_may_update_window), and sends at once.
 *
 * --elicit instead forges an out-of-window probe from the peer to the pod (seq = peer snd_nxt - 1). The pod's
 * restored socket answers it with a dup ACK built by its own kernel: current window, current timestamps,
 * nothing copied from a possibly stale map. It needs the pod's sockets restored, like the default mode.
 *
 * Packets leave a raw socket (IPPROTO_RAW implies IP_HDRINCL) inside --netns, marked PM_SOCCR_MARK so a hold
 * still armed on that path lets them through.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include "pm-hold.h"

#define IP_HDR_BYTES 20
#define TCP_HDR_BYTES 20
#define TS_OPT_BYTES 12 /* NOP, NOP, kind 8, length 10, TSval, TSecr: the layout Linux itself sends */
#define MAX_SEGMENT_BYTES (IP_HDR_BYTES + TCP_HDR_BYTES + TS_OPT_BYTES)
#define TCP_FLAG_ACK 0x10
#define IP_DF 0x4000
#define SEGMENT_TTL 64
#define MAX_LINE_BYTES 256

/* One segment to forge; addresses and ports in network byte order, the rest in host byte order. */
struct pm_seg {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u32 seq, ack, tsval, tsecr;
	__u16 win;
	bool has_ts;
};

static __u32 sum16(const void *data, size_t len, __u32 sum)
{
	const __u8 *p = data;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (__u32)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (__u32)p[len - 1] << 8;
	return sum;
}

static __u16 fold(__u32 sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

static void put16(__u8 *p, __u16 v)
{
	p[0] = (__u8)(v >> 8);
	p[1] = (__u8)v;
}

static void put32(__u8 *p, __u32 v)
{
	put16(p, (__u16)(v >> 16));
	put16(p + 2, (__u16)v);
}

/* Builds IPv4 + TCP (ACK only) with both checksums; returns its length. */
static size_t build_segment(const struct pm_seg *s, __u8 *pkt)
{
	size_t tcp_len = TCP_HDR_BYTES + (s->has_ts ? TS_OPT_BYTES : 0);
	size_t len = IP_HDR_BYTES + tcp_len;
	__u8 *ip = pkt, *tcp = pkt + IP_HDR_BYTES;
	__u8 pseudo[12];

	memset(pkt, 0, len);
	ip[0] = 0x45;
	put16(ip + 2, (__u16)len);
	put16(ip + 6, IP_DF);
	ip[8] = SEGMENT_TTL;
	ip[9] = IPPROTO_TCP;
	memcpy(ip + 12, &s->saddr, 4);
	memcpy(ip + 16, &s->daddr, 4);
	put16(ip + 10, fold(sum16(ip, IP_HDR_BYTES, 0)));

	memcpy(tcp, &s->sport, 2);
	memcpy(tcp + 2, &s->dport, 2);
	put32(tcp + 4, s->seq);
	put32(tcp + 8, s->ack);
	tcp[12] = (__u8)((tcp_len / 4) << 4);
	tcp[13] = TCP_FLAG_ACK;
	put16(tcp + 14, s->win);
	if (s->has_ts) {
		__u8 *o = tcp + TCP_HDR_BYTES;
		o[0] = 1;
		o[1] = 1;
		o[2] = 8;
		o[3] = 10;
		put32(o + 4, s->tsval);
		put32(o + 8, s->tsecr);
	}
	memcpy(pseudo, &s->saddr, 4);
	memcpy(pseudo + 4, &s->daddr, 4);
	pseudo[8] = 0;
	pseudo[9] = IPPROTO_TCP;
	put16(pseudo + 10, (__u16)tcp_len);
	put16(tcp + 16, fold(sum16(tcp, tcp_len, sum16(pseudo, sizeof(pseudo), 0))));
	return len;
}

static bool side_usable(const struct pm_side *s)
{
	return (s->flags & (PM_SIDE_SEEN | PM_SIDE_ACK)) == (PM_SIDE_SEEN | PM_SIDE_ACK);
}

/* The segment to send for one flow, or false when the flow is closed or was never seen in that direction. */
static bool segment_for(const struct pm_flow_key *k, const struct pm_flow *f, bool elicit, struct pm_seg *s)
{
	const struct pm_side *side = elicit ? &f->to_pod : &f->from_pod;
	__u8 closed = (f->from_pod.flags | f->to_pod.flags) & (PM_SIDE_FIN | PM_SIDE_RST);

	if (closed || !side_usable(side))
		return false;
	memset(s, 0, sizeof(*s));
	s->saddr = elicit ? k->peer_addr : k->pod_addr;
	s->daddr = elicit ? k->pod_addr : k->peer_addr;
	s->sport = elicit ? k->peer_port : k->pod_port;
	s->dport = elicit ? k->pod_port : k->peer_port;
	/* snd_nxt - 1 is left of the pod's window: the pod must answer with a dup ACK (RFC 9293 3.10.7.4). */
	s->seq = elicit ? side->nxt - 1 : side->nxt;
	s->ack = side->ack;
	s->win = side->win;
	s->has_ts = (side->flags & PM_SIDE_TS) != 0;
	s->tsval = side->tsval;
	s->tsecr = side->tsecr;
	return true;
}

/* Flow lines on stdin: "POD_IP:PORT PEER_IP:PORT NXT ACK WIN TSVAL TSECR" (TSVAL/TSECR "-" without
 * timestamps), describing the side the mode uses: from the pod by default, toward the pod with --elicit. */
static bool parse_flow_line(const char *line, bool elicit, struct pm_seg *s)
{
	char pod[32], peer[32], tsval[16], tsecr[16];
	unsigned pod_port, peer_port, nxt, ack, win;
	struct in_addr pa, qa;

	if (sscanf(line, "%31[^:]:%u %31[^:]:%u %u %u %u %15s %15s", pod, &pod_port, peer, &peer_port, &nxt, &ack,
		   &win, tsval, tsecr) != 9)
		return false;
	if (inet_pton(AF_INET, pod, &pa) != 1 || inet_pton(AF_INET, peer, &qa) != 1 || pod_port > 65535 ||
	    peer_port > 65535 || win > 65535)
		return false;
	memset(s, 0, sizeof(*s));
	s->saddr = elicit ? qa.s_addr : pa.s_addr;
	s->daddr = elicit ? pa.s_addr : qa.s_addr;
	s->sport = htons((__u16)(elicit ? peer_port : pod_port));
	s->dport = htons((__u16)(elicit ? pod_port : peer_port));
	s->seq = elicit ? nxt - 1 : nxt;
	s->ack = ack;
	s->win = (__u16)win;
	s->has_ts = strcmp(tsval, "-") != 0;
	s->tsval = s->has_ts ? (__u32)strtoul(tsval, NULL, 10) : 0;
	s->tsecr = s->has_ts ? (__u32)strtoul(tsecr, NULL, 10) : 0;
	return true;
}

struct seg_list {
	struct pm_seg items[PM_FLOWS_MAX];
	size_t count;
	size_t skipped;
};

static void collect_from_map(const char *dir, bool elicit, __u32 only_pod, struct seg_list *out)
{
	int fd = pm_open_pinned(dir, PM_PIN_FLOWS);
	struct pm_flow_key key, next;
	struct pm_flow flow;
	void *prev = NULL;

	if (fd == -ENOENT)
		pm_fail("no hold pinned at %s (run pm-hold attach first)", dir);
	if (fd < 0)
		pm_fail("open %s/" PM_PIN_FLOWS ": %s", dir, strerror(-fd));
	for (int n = 0; n < PM_FLOWS_MAX && bpf_map_get_next_key(fd, prev, &next) == 0; n++) {
		key = next;
		prev = &key;
		if (bpf_map_lookup_elem(fd, &key, &flow) || (only_pod && key.pod_addr != only_pod))
			continue;
		if (segment_for(&key, &flow, elicit, &out->items[out->count]))
			out->count++;
		else
			out->skipped++;
	}
	close(fd);
}

static void collect_from_stdin(bool elicit, __u32 only_pod, struct seg_list *out)
{
	char line[MAX_LINE_BYTES];

	while (out->count < PM_FLOWS_MAX && fgets(line, sizeof(line), stdin)) {
		struct pm_seg *s = &out->items[out->count];
		if (line[0] == '\n' || line[0] == '#')
			continue;
		if (!parse_flow_line(line, elicit, s))
			pm_usage_fail("bad flow line \"%.60s\" (want POD_IP:PORT PEER_IP:PORT NXT ACK WIN TSVAL TSECR)", line);
		if (only_pod && (elicit ? s->daddr : s->saddr) != only_pod)
			out->skipped++;
		else
			out->count++;
	}
}

static void print_seg(const struct pm_seg *s)
{
	printf("{\"from\":");
	pm_json_addr(stdout, s->saddr, s->sport);
	printf(",\"to\":");
	pm_json_addr(stdout, s->daddr, s->dport);
	printf(",\"seq\":%u,\"ack\":%u,\"win\":%u", s->seq, s->ack, s->win);
	if (s->has_ts)
		printf(",\"tsval\":%u,\"tsecr\":%u", s->tsval, s->tsecr);
	printf("}");
}

int pm_cmd_reopen(const struct pm_args *a)
{
	__u32 only_pod = a->pod_ip ? pm_parse_ipv4(a->pod_ip, "--pod-ip") : 0;
	struct seg_list *list = calloc(1, sizeof(*list));
	int mark = PM_SOCCR_MARK, fd;
	__u8 pkt[MAX_SEGMENT_BYTES];

	if (!list)
		pm_fail("out of memory");
	if (!a->netns)
		pm_usage_fail("--netns is required");
	if (a->flows && strcmp(a->flows, "-") == 0)
		collect_from_stdin(a->elicit, only_pod, list);
	else if (a->flows)
		pm_usage_fail("--flows takes only \"-\" (flow lines on stdin)");
	else if (a->pin)
		collect_from_map(a->pin, a->elicit, only_pod, list);
	else
		pm_usage_fail("--pin or --flows - is required");

	if (pm_enter_netns(a->netns) < 0)
		pm_fail("network namespace %s does not exist", a->netns);
	fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		pm_fail("raw socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		pm_fail("SO_MARK: %s", strerror(errno));

	size_t sent = 0;
	for (size_t i = 0; i < list->count; i++) {
		const struct pm_seg *s = &list->items[i];
		struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr.s_addr = s->daddr };
		size_t len = build_segment(s, pkt);
		if (sendto(fd, pkt, len, 0, (struct sockaddr *)&dst, sizeof(dst)) != (ssize_t)len)
			pm_fail("send to %s: %s", inet_ntoa(dst.sin_addr), strerror(errno));
		sent++;
	}
	__u64 now = pm_mono_ns();
	printf("{\"mode\":\"%s\",\"sent\":%zu,\"skipped\":%zu,\"monoUs\":%llu,\"segments\":[",
	       a->elicit ? "elicit" : "ack", sent, list->skipped, (unsigned long long)(now / 1000));
	for (size_t i = 0; i < list->count; i++) {
		if (i)
			putchar(',');
		print_seg(&list->items[i]);
	}
	printf("]}\n");
	close(fd);
	free(list);
	return 0;
}
