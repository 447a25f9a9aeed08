/*
 * The contract between hold.bpf.c and the pm-hold controller: map names, mode bits and the layout of every
 * map value. Both sides include this file, so a change here changes both (and a pinned map from an older
 * layout is refused at attach time by libbpf's compatibility check: detach first).
 *
 * Fixed-width types only (__u8 .. __u64): the BPF side gets them from hold_abi.h, the controller from
 * <linux/types.h>.
 */
#ifndef PM_HOLD_H
#define PM_HOLD_H

/* CRIU's SOCCR_MARK: libsoccr's raw repair packets carry it and every hold must let them through. */
#define PM_SOCCR_MARK 0xC114

/* Mode bits in pm_ctl.mode. "In" and "out" are seen from the pod: DROP_TO_POD drops peer→pod packets. */
#define PM_MODE_ZERO_WINDOW   (1u << 0) /* rewrite the window of every pod→peer segment to 0 */
#define PM_MODE_DROP_TO_POD   (1u << 1) /* drop IPv4 packets addressed to the pod */
#define PM_MODE_DROP_FROM_POD (1u << 2) /* drop IPv4 packets sent by the pod */
#define PM_MODE_ALL (PM_MODE_ZERO_WINDOW | PM_MODE_DROP_TO_POD | PM_MODE_DROP_FROM_POD)

/* pm_ctl.flags, written by the controller only. */
#define PM_CTL_QDISC_CREATED (1u << 0) /* attach created the clsact qdisc, so detach removes it */

/* Control map (array, one entry, pinned as DIR/pm_ctl). */
struct pm_ctl {
	__u32 mode;
	__u32 flags;
};

/*
 * Counters (per-CPU array, one entry, pinned as DIR/pm_cnt): per-CPU so the datapath never contends and the
 * controller can rewrite pm_ctl without racing increments. The controller sums the CPUs.
 */
struct pm_counters {
	__u64 dropped_to_pod;
	__u64 dropped_from_pod;
	__u64 rst_to_pod;   /* RST segments seen toward the pod (before any drop) */
	__u64 rst_from_pod; /* RST segments sent by the pod (before any drop) */
	__u64 zero_window_rewrites;
	__u64 mark_exempt;  /* packets let through a drop because they carried PM_SOCCR_MARK */
	__u64 tracked_to_pod;
	__u64 tracked_from_pod;
};

/* Flow key, the same for both directions of a connection; addresses and ports in network byte order. */
struct pm_flow_key {
	__u32 pod_addr;
	__u32 peer_addr;
	__u16 pod_port;
	__u16 peer_port;
};

/* pm_side.flags */
#define PM_SIDE_SEEN   (1u << 0) /* at least one segment passed the hold in this direction */
#define PM_SIDE_ACK    (1u << 1) /* ack is valid */
#define PM_SIDE_TS     (1u << 2) /* tsval/tsecr are valid: the timestamp option was present */
#define PM_SIDE_SYN    (1u << 3) /* a SYN was seen: isn (and wscale, if PM_SIDE_WSCALE) are valid */
#define PM_SIDE_WSCALE (1u << 4)
#define PM_SIDE_FIN    (1u << 5)
#define PM_SIDE_RST    (1u << 6)
#define PM_SIDE_ZW     (1u << 7) /* the newest segment left with window 0: zw_ack is what it acknowledged */

/*
 * What one direction of a flow last put on the wire past the hold; sequence numbers in host byte order.
 * `nxt` is the highest seq + length (+1 for SYN and FIN) seen: the sender's snd_nxt as the receiver knows it.
 */
struct pm_side {
	__u32 nxt;
	__u32 ack;
	__u32 tsval;
	__u32 tsecr;
	__u32 isn;
	__u16 win;   /* the real window field of the newest segment, before any zero-window rewrite (unscaled) */
	__u8 flags;  /* PM_SIDE_* */
	__u8 wscale; /* window scale the sender announced in its SYN */
	/*
	 * from_pod only: the ack of the newest zero-window segment. Once it equals to_pod.nxt the peer has every
	 * byte it sent acknowledged with window 0, so nothing of it is in flight and it will send nothing more
	 * (see quiesced() in pm-hold.c, which also wants the pod's bytes acknowledged).
	 */
	__u32 zw_ack;
	__u32 _pad;
	__u64 packets;
	__u64 last_ns; /* bpf_ktime_get_ns() of the newest segment: CLOCK_MONOTONIC */
};

/* Flow map value (LRU hash, pinned as DIR/pm_flows). Each direction is written by one program only. */
struct pm_flow {
	struct pm_side from_pod;
	struct pm_side to_pod;
};

#define PM_FLOWS_MAX 16384

#endif
