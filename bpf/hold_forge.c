/*
 * pm-hold reopen / kick: forged TCP segments that move a held peer along without waiting for its timers.
 *
 * reopen: a peer that saw window 0 sits in persist mode and only asks again when its probe timer fires
 * (RTO-based, 200 ms at least, doubling: 200, 400, 800 ms ...). After the pod resumes, nothing its kernel sends
 * by itself carries the open window in an acceptable segment: TCP_REPAIR_OFF's window probe has
 * seq = snd_una - 1, which the peer rejects as out of window (it answers with a dup ACK and discards the
 * segment, window and all). So reopen forges, from the flow map, the pure ACK the pod would send: seq = the
 * pod's snd_nxt as last seen, ack = its last ack, the real window field, and the timestamp option of its last
 * segment (an equal TSval passes the peer's PAWS check). The peer takes the window update (ack == snd_una,
 * seq == snd_wl1, larger window: tcp_may_update_window) and sends at once.
 *
 * reopen --elicit: forges an out-of-window probe from the peer to the pod instead (seq left of the pod's window).
 * The pod's restored socket answers with a dup ACK its own kernel builds: current window, current timestamps,
 * nothing copied from a possibly stale map.
 *
 * kick: right after zero-window is armed, two segments per flow toward the peer: an in-window pure ACK with
 * window 0 (closes the window of a flow that was idle, so sent nothing the hook could rewrite) and an
 * out-of-window probe (left of the peer's window), which the peer answers at once with an ACK of all it got,
 * instead of after its delayed-ACK timer (40 ms and more): the pod then has nothing in flight either.
 *
 * Every segment needs the pod's sockets to exist (reopen and elicit: restored), or a peer's answer meets no
 * socket and gets an RST. They leave a raw socket (IPPROTO_RAW implies IP_HDRINCL) inside --netns, marked
 * PM_SOCCR_MARK so a hold still armed on that path in that namespace lets them through (the mark does not
 * survive a veth into another namespace).
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

#define MAX_SEGMENTS_PER_FLOW 2

/*
 * A segment from one side of the flow with that side's last seq, ack, window and timestamps. `s` is the sender's
 * half of the flow entry; the endpoints follow from which half it is.
 */
static struct pm_seg segment_from(const struct pm_flow_key *k, const struct pm_side *s, bool from_pod)
{
	struct pm_seg seg = {
		.saddr = from_pod ? k->pod_addr : k->peer_addr,
		.daddr = from_pod ? k->peer_addr : k->pod_addr,
		.sport = from_pod ? k->pod_port : k->peer_port,
		.dport = from_pod ? k->peer_port : k->pod_port,
		.seq = s->nxt,
		.ack = s->ack,
		.win = s->win,
		.has_ts = (s->flags & PM_SIDE_TS) != 0,
		.tsval = s->tsval,
		.tsecr = s->tsecr,
	};
	return seg;
}

/*
 * The segments one flow gets; returns how many (0..MAX_SEGMENTS_PER_FLOW), 0 for a closed flow or one not seen
 * in the directions needed.
 *
 * An out-of-window probe must lie left of the receiver's rcv_wup (the rcv_nxt it last advertised a window
 * from), not merely of its rcv_nxt: a receiver holding a delayed ACK still has rcv_wup < rcv_nxt and takes
 * seq = rcv_nxt - 1 as in window, answering nothing. rcv_wup is the ack it last sent, hence ack - 1.
 */
static int segments_for(const struct pm_flow_key *k, const struct pm_flow *f, enum pm_forge kind, struct pm_seg *out)
{
	bool closed = ((f->from_pod.flags | f->to_pod.flags) & (PM_SIDE_FIN | PM_SIDE_RST)) != 0;
	struct pm_seg seg;

	if (closed || !side_usable(&f->from_pod) || !side_usable(&f->to_pod))
		return 0;
	switch (kind) {
	case PM_FORGE_REOPEN:
		out[0] = segment_from(k, &f->from_pod, true);
		return 1;
	case PM_FORGE_ELICIT:
		seg = segment_from(k, &f->to_pod, false);
		seg.seq = f->from_pod.ack - 1;
		out[0] = seg;
		return 1;
	case PM_FORGE_KICK:
		seg = segment_from(k, &f->from_pod, true);
		seg.win = 0;
		out[0] = seg;
		seg.seq = f->to_pod.ack - 1;
		out[1] = seg;
		return 2;
	}
	return 0;
}

/* One side of a flow line: NXT ACK WIN TSVAL TSECR (TSVAL and TSECR "-" without the timestamp option). */
static bool parse_side(const char *nxt, const char *ack, const char *win, const char *tsval, const char *tsecr,
		       struct pm_side *s)
{
	char *end;
	unsigned long v[3];
	const char *text[3] = { nxt, ack, win };

	for (int i = 0; i < 3; i++) {
		errno = 0;
		v[i] = strtoul(text[i], &end, 10);
		if (errno || *end || v[i] > 0xffffffffUL)
			return false;
	}
	if (v[2] > 0xffff)
		return false;
	memset(s, 0, sizeof(*s));
	s->nxt = (__u32)v[0];
	s->ack = (__u32)v[1];
	s->win = (__u16)v[2];
	s->flags = PM_SIDE_SEEN | PM_SIDE_ACK;
	if (strcmp(tsval, "-") != 0) {
		s->flags |= PM_SIDE_TS;
		s->tsval = (__u32)strtoul(tsval, NULL, 10);
		s->tsecr = (__u32)strtoul(tsecr, NULL, 10);
	}
	return true;
}

/*
 * Flow lines on stdin, the flow entry as `pm-hold stats` prints it, flattened:
 *   POD_IP:PORT PEER_IP:PORT  NXT ACK WIN TSVAL TSECR (from the pod)  NXT ACK WIN TSVAL TSECR (toward the pod)
 */
#define FLOW_LINE_FORMAT "POD_IP:PORT PEER_IP:PORT then NXT ACK WIN TSVAL TSECR from the pod, then toward it"

static bool parse_flow_line(const char *line, struct pm_flow_key *k, struct pm_flow *f)
{
	char pod[32], peer[32], w[10][16];
	unsigned pod_port, peer_port;
	struct in_addr pa, qa;

	if (sscanf(line, "%31[^:]:%u %31[^:]:%u %15s %15s %15s %15s %15s %15s %15s %15s %15s %15s", pod, &pod_port,
		   peer, &peer_port, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9]) != 14)
		return false;
	if (inet_pton(AF_INET, pod, &pa) != 1 || inet_pton(AF_INET, peer, &qa) != 1 || pod_port > 65535 ||
	    peer_port > 65535)
		return false;
	k->pod_addr = pa.s_addr;
	k->peer_addr = qa.s_addr;
	k->pod_port = htons((__u16)pod_port);
	k->peer_port = htons((__u16)peer_port);
	return parse_side(w[0], w[1], w[2], w[3], w[4], &f->from_pod) &&
	       parse_side(w[5], w[6], w[7], w[8], w[9], &f->to_pod);
}

struct seg_list {
	struct pm_seg items[PM_FLOWS_MAX * MAX_SEGMENTS_PER_FLOW];
	size_t count;
	size_t flows;
	size_t skipped;
};

static void add_flow(struct seg_list *out, const struct pm_flow_key *k, const struct pm_flow *f, enum pm_forge kind,
		     __u32 only_pod)
{
	int n = (only_pod && k->pod_addr != only_pod) ? 0 : segments_for(k, f, kind, &out->items[out->count]);

	if (n == 0) {
		out->skipped++;
		return;
	}
	out->count += (size_t)n;
	out->flows++;
}

static void collect_from_map(const char *dir, enum pm_forge kind, __u32 only_pod, struct seg_list *out)
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
		if (bpf_map_lookup_elem(fd, &key, &flow) == 0) /* else evicted meanwhile */
			add_flow(out, &key, &flow, kind, only_pod);
	}
	close(fd);
}

static void collect_from_stdin(enum pm_forge kind, __u32 only_pod, struct seg_list *out)
{
	char line[MAX_LINE_BYTES];
	struct pm_flow_key key;
	struct pm_flow flow;

	for (int n = 0; n < PM_FLOWS_MAX && fgets(line, sizeof(line), stdin); n++) {
		if (line[0] == '\n' || line[0] == '#')
			continue;
		if (!parse_flow_line(line, &key, &flow))
			pm_usage_fail("bad flow line \"%.60s\" (want " FLOW_LINE_FORMAT ")", line);
		add_flow(out, &key, &flow, kind, only_pod);
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

static const char *kind_name(enum pm_forge kind)
{
	return kind == PM_FORGE_KICK ? "kick" : kind == PM_FORGE_ELICIT ? "elicit" : "reopen";
}

int pm_cmd_forge(const struct pm_args *a, enum pm_forge kind)
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
		collect_from_stdin(kind, only_pod, list);
	else if (a->flows)
		pm_usage_fail("--flows takes only \"-\" (flow lines on stdin)");
	else if (a->pin)
		collect_from_map(a->pin, kind, only_pod, list);
	else
		pm_usage_fail("--pin or --flows - is required");

	if (pm_enter_netns(a->netns) < 0)
		pm_fail("network namespace %s does not exist", a->netns);
	fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		pm_fail("raw socket: %s", strerror(errno));
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		pm_fail("SO_MARK: %s", strerror(errno));

	for (size_t i = 0; i < list->count; i++) {
		const struct pm_seg *s = &list->items[i];
		struct sockaddr_in dst = { .sin_family = AF_INET, .sin_addr.s_addr = s->daddr };
		size_t len = build_segment(s, pkt);
		if (sendto(fd, pkt, len, 0, (struct sockaddr *)&dst, sizeof(dst)) != (ssize_t)len)
			pm_fail("send to %s: %s", inet_ntoa(dst.sin_addr), strerror(errno));
	}
	/* Taken after the last send: a peer's reaction cannot predate it. */
	__u64 now = pm_mono_ns();
	printf("{\"kind\":\"%s\",\"sent\":%zu,\"flows\":%zu,\"skipped\":%zu,\"monoUs\":%llu,\"segments\":[",
	       kind_name(kind), list->count, list->flows, list->skipped, (unsigned long long)(now / 1000));
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
