/*
 * The few kernel UAPI definitions hold.bpf.c needs, copied from <linux/bpf.h> and <linux/pkt_cls.h>.
 *
 * Why not include those headers: with `clang -target bpf` the multiarch directory holding <asm/types.h>
 * (/usr/include/x86_64-linux-gnu on Debian) is not on the include path, so <linux/types.h> fails. This file
 * keeps hold.bpf.c buildable by a plain `clang -O2 -g -target bpf -c` (as scripts/build-native.sh does),
 * with no per-architecture flags. Everything here is stable UAPI: values and layouts never change.
 */
#ifndef PM_HOLD_ABI_H
#define PM_HOLD_ABI_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u16 __sum16;

enum {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
};

#define BPF_ANY 0
#define BPF_NOEXIST 1

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

/* struct __sk_buff up to the last field this program reads; the verifier checks offsets against the UAPI. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
	__u32 vlan_present;
	__u32 vlan_tci;
	__u32 vlan_proto;
	__u32 priority;
	__u32 ingress_ifindex;
	__u32 ifindex;
	__u32 tc_index;
	__u32 cb[5];
	__u32 hash;
	__u32 tc_classid;
	__u32 data;
	__u32 data_end;
	__u32 napi_id;
};

#endif
