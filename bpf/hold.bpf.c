// SPDX-License-Identifier: GPL-2.0
/*
 * Traffic hold for a pod being migrated: tc clsact (cls_bpf direct-action) programs on the NODE side of the
 * pod's veth. On that device tc ingress sees what the pod sends (hold_from_pod) and tc egress what is sent to
 * the pod (hold_to_pod). pm_ctl.mode selects, at run time:
 *   ZERO_WINDOW   pod→peer segments leave with window 0: the peer's in-flight data is still ACKed, then it
 *                 stops sending and waits in persist mode with nothing in flight (no RTO backoff).
 *   DROP_*        drop IPv4 to / from the pod during the freeze, except packets marked PM_SOCCR_MARK.
 * Every TCP segment that passes is recorded per flow (pm_flows) so the controller can later forge the one
 * ACK that reopens the window at the peer (pm-hold reopen).
 *
 * Headers are read with bpf_skb_load_bytes rather than direct packet access: the veth may hand over
 * non-linear skbs and the copies keep every offset check trivial for the verifier.
 */
#include "hold_abi.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hold.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define IPPROTO_TCP 6
#define IP_OFFSET_MASK 0x1fff
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define TCP_WIN_OFF 14
#define TCP_CSUM_OFF 16
#define TCP_MAX_OPT_BYTES 40
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_WSCALE 3
#define TCPOPT_TIMESTAMP 8

/* Set by the controller before load: the pod's IPv4 address, network byte order. */
const volatile __u32 pod_addr = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pm_ctl);
} pm_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pm_counters);
} pm_cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PM_FLOWS_MAX);
	__type(key, struct pm_flow_key);
	__type(value, struct pm_flow);
} pm_flows SEC(".maps");

struct pm_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__sum16 check;
	__be32 saddr;
	__be32 daddr;
};

struct pm_tcphdr {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};

/* What the option parser found: the timestamp pair and the window scale (SYN only). */
struct pm_opts {
	__u32 tsval;
	__u32 tsecr;
	__u8 has_ts;
	__u8 has_wscale;
	__u8 wscale;
};

/*
 * Option bytes are copied into a 64-byte buffer and indexed modulo its size: the mask is a bound the verifier
 * sees on every access, whatever copies of the index the compiler makes. The walk runs under bpf_loop, so the
 * verifier checks one step once instead of unrolling 40 data-dependent iterations (an open-coded loop here
 * exceeded the 1M-instruction verification budget).
 */
#define OPT_BUF_BYTES 64
#define OPT_AT(buf, i) ((buf)[(i) & (OPT_BUF_BYTES - 1)])

struct opt_walk {
	__u8 buf[OPT_BUF_BYTES];
	__u32 pos;
	__u32 len;
	struct pm_opts found;
};

static __always_inline __u32 be32_at(const __u8 *buf, __u32 i)
{
	return ((__u32)OPT_AT(buf, i) << 24) | ((__u32)OPT_AT(buf, i + 1) << 16) |
	       ((__u32)OPT_AT(buf, i + 2) << 8) | (__u32)OPT_AT(buf, i + 3);
}

/* One option per call; returns 1 to stop the walk. */
static long opt_step(__u32 step, void *data)
{
	struct opt_walk *w = data;
	__u32 i = w->pos;

	if (i >= w->len || i >= TCP_MAX_OPT_BYTES)
		return 1;
	__u8 kind = OPT_AT(w->buf, i);
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->pos = i + 1;
		return 0;
	}
	__u8 olen = OPT_AT(w->buf, i + 1);
	if (olen < 2 || i + olen > w->len)
		return 1;
	if (kind == TCPOPT_TIMESTAMP && olen == 10) {
		w->found.tsval = be32_at(w->buf, i + 2);
		w->found.tsecr = be32_at(w->buf, i + 6);
		w->found.has_ts = 1;
	} else if (kind == TCPOPT_WSCALE && olen == 3) {
		w->found.wscale = OPT_AT(w->buf, i + 2);
		w->found.has_wscale = 1;
	}
	w->pos = i + olen;
	return 0;
}

static __always_inline void parse_options(struct __sk_buff *skb, __u32 off, __u32 len, struct pm_opts *o)
{
	struct opt_walk w = {};

	if (len == 0 || len > TCP_MAX_OPT_BYTES)
		return;
	if (bpf_skb_load_bytes(skb, off, w.buf, len) < 0)
		return;
	w.len = len;
	bpf_loop(TCP_MAX_OPT_BYTES, opt_step, &w, 0);
	*o = w.found;
}

/* Records one segment that passes the hold into its direction's half of the flow entry. */
static __always_inline void track(struct __sk_buff *skb, const struct pm_iphdr *ip, const struct pm_tcphdr *tcp,
				  __u32 tcp_off, int from_pod, int zeroed)
{
	struct pm_flow_key key = {};
	struct pm_opts opts = {};
	struct pm_flow *flow;

	if (from_pod) {
		key.pod_addr = ip->saddr;
		key.peer_addr = ip->daddr;
		key.pod_port = tcp->source;
		key.peer_port = tcp->dest;
	} else {
		key.pod_addr = ip->daddr;
		key.peer_addr = ip->saddr;
		key.pod_port = tcp->dest;
		key.peer_port = tcp->source;
	}
	flow = bpf_map_lookup_elem(&pm_flows, &key);
	if (!flow) {
		struct pm_flow empty = {};
		bpf_map_update_elem(&pm_flows, &key, &empty, BPF_NOEXIST);
		flow = bpf_map_lookup_elem(&pm_flows, &key);
		if (!flow)
			return;
	}
	struct pm_side *s = from_pod ? &flow->from_pod : &flow->to_pod;

	__u32 doff = (__u32)(tcp->doff_res >> 4) * 4;
	__u32 ihl = (__u32)(ip->ver_ihl & 0x0f) * 4;
	/* BIG TCP sends tot_len 0 for IPv4 packets over 64 KiB; the skb length is then the truth. */
	__u32 ip_len = ip->tot_len ? bpf_ntohs(ip->tot_len) : skb->len - ETH_HLEN;
	__u32 payload = ip_len > ihl + doff ? ip_len - ihl - doff : 0;
	__u8 fl = tcp->flags;
	__u32 seq = bpf_ntohl(tcp->seq);
	__u32 ack = bpf_ntohl(tcp->ack_seq);
	__u32 end = seq + payload + ((fl & TCP_SYN) ? 1 : 0) + ((fl & TCP_FIN) ? 1 : 0);
	__u8 sflags = s->flags;

	parse_options(skb, tcp_off + sizeof(*tcp), doff - sizeof(*tcp), &opts);
	if (!(sflags & PM_SIDE_SEEN) || (__s32)(end - s->nxt) > 0)
		s->nxt = end;
	if (fl & TCP_SYN) {
		/* A new connection on a 4-tuple the map still holds: the old one's end is not this one's. */
		sflags &= ~(PM_SIDE_FIN | PM_SIDE_RST);
		s->isn = seq;
		sflags |= PM_SIDE_SYN;
		if (opts.has_wscale) {
			s->wscale = opts.wscale;
			sflags |= PM_SIDE_WSCALE;
		}
	}
	/* Only a segment at least as new as the last (by its ack) may overwrite ack, window and timestamps. */
	if (!(sflags & PM_SIDE_ACK) || (__s32)(ack - s->ack) >= 0) {
		if (fl & TCP_ACK) {
			s->ack = ack;
			sflags |= PM_SIDE_ACK;
		}
		if (!(fl & TCP_SYN))
			s->win = bpf_ntohs(tcp->window); /* a SYN's window is never scaled: keep it out */
		if (opts.has_ts) {
			s->tsval = opts.tsval;
			s->tsecr = opts.tsecr;
			sflags |= PM_SIDE_TS;
		}
		if (zeroed) {
			s->zw_ack = ack;
			sflags |= PM_SIDE_ZW;
		} else {
			sflags &= ~PM_SIDE_ZW;
		}
	}
	if (fl & TCP_FIN)
		sflags |= PM_SIDE_FIN;
	if (fl & TCP_RST)
		sflags |= PM_SIDE_RST;
	s->flags = sflags | PM_SIDE_SEEN;
	s->packets++;
	s->last_ns = bpf_ktime_get_ns();
}

/*
 * bpf_l4_csum_replace first: for CHECKSUM_PARTIAL skbs (what a local TCP sender hands the veth) it leaves the
 * checksum field alone, because that field then holds only the pseudo-header sum and the device (or
 * skb_checksum_help) sums the rewritten bytes later; otherwise it patches the field incrementally.
 */
static __always_inline int zero_window(struct __sk_buff *skb, __u32 tcp_off, __be16 old_win)
{
	__be16 zero = 0;

	if (bpf_l4_csum_replace(skb, tcp_off + TCP_CSUM_OFF, old_win, zero, sizeof(zero)) < 0)
		return -1;
	return (int)bpf_skb_store_bytes(skb, tcp_off + TCP_WIN_OFF, &zero, sizeof(zero), 0);
}

static __always_inline int hold(struct __sk_buff *skb, int from_pod)
{
	__u32 zero_key = 0;
	struct pm_ctl *ctl = bpf_map_lookup_elem(&pm_ctl, &zero_key);
	struct pm_counters *cnt = bpf_map_lookup_elem(&pm_cnt, &zero_key);
	struct pm_iphdr ip;
	struct pm_tcphdr tcp;
	__u32 mode = ctl ? ctl->mode : 0;
	int is_tcp;

	if (!cnt || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK; /* ARP and IPv6 are never held */
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return TC_ACT_OK;
	if ((from_pod ? ip.saddr : ip.daddr) != pod_addr || (ip.ver_ihl >> 4) != 4 || (ip.ver_ihl & 0x0f) < 5)
		return TC_ACT_OK;

	__u32 tcp_off = ETH_HLEN + (__u32)(ip.ver_ihl & 0x0f) * 4;
	is_tcp = ip.protocol == IPPROTO_TCP && !(bpf_ntohs(ip.frag_off) & IP_OFFSET_MASK) &&
		 bpf_skb_load_bytes(skb, tcp_off, &tcp, sizeof(tcp)) == 0 && (tcp.doff_res >> 4) >= 5;
	if (is_tcp && (tcp.flags & TCP_RST)) {
		if (from_pod)
			cnt->rst_from_pod++;
		else
			cnt->rst_to_pod++;
	}

	if (mode & (from_pod ? PM_MODE_DROP_FROM_POD : PM_MODE_DROP_TO_POD)) {
		if (skb->mark != PM_SOCCR_MARK) {
			if (from_pod)
				cnt->dropped_from_pod++;
			else
				cnt->dropped_to_pod++;
			return TC_ACT_SHOT;
		}
		cnt->mark_exempt++;
	}
	if (!is_tcp)
		return TC_ACT_OK;

	/* The zero-window rewrite goes first so track() can record whether this segment left with window 0. */
	int zeroed = 0;
	if (from_pod && (mode & PM_MODE_ZERO_WINDOW) && !(tcp.flags & (TCP_SYN | TCP_RST))) {
		if (tcp.window == 0) {
			zeroed = 1;
		} else if (zero_window(skb, tcp_off, tcp.window) == 0) {
			zeroed = 1;
			cnt->zero_window_rewrites++;
		}
	}
	track(skb, &ip, &tcp, tcp_off, from_pod, zeroed);
	if (from_pod)
		cnt->tracked_from_pod++;
	else
		cnt->tracked_to_pod++;
	return TC_ACT_OK;
}

/* tc ingress of the node-side veth: packets the pod sends. */
SEC("tc")
int hold_from_pod(struct __sk_buff *skb)
{
	return hold(skb, 1);
}

/* tc egress of the node-side veth: packets on their way into the pod. */
SEC("tc")
int hold_to_pod(struct __sk_buff *skb)
{
	return hold(skb, 0);
}

char LICENSE[] SEC("license") = "GPL";
