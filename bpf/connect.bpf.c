// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-keyed egress enforcement with cgroup sock_addr programs.
 * connect4/connect6 decide every connect() in the cgroup subtree they are
 * attached to. post_bind4/post_bind6 record which process owns each bound
 * socket, so the clients of a local listener know its identity.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SIGIL_CURRENT_NETNS (-1)

/* Socket programs of this type allow the call with 1 and reject it with EPERM with 0. */
#define SIGIL_SOCK_ALLOW 1
#define SIGIL_SOCK_REJECT 0

/*
 * The inner map templates give sizes, not BTF types: Linux 6.1 compares a
 * BTF-derived field of the template with the same field of an inner map
 * created from user space, which never matches, and rejects every insert.
 */
/* Generation -> per-subject settings of that rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_MAX_SUBJECTS);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(struct sigil_subject));
	});
} sigil_subjects SEC(".maps");

/* Generation -> peer rules of that rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_MAX_PEER_KEYS);
		__uint(key_size, sizeof(struct sigil_peer_key));
		__uint(value_size, sizeof(struct sigil_rule_list));
	});
} sigil_peer_rules SEC(".maps");

/* Generation -> CIDR rules of that rule set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_MAX_CIDR_KEYS);
		__uint(key_size, sizeof(struct sigil_cidr_key));
		__uint(value_size, sizeof(struct sigil_rule_list));
	});
} sigil_cidr_rules SEC(".maps");

/* Owner of each bound socket, written at post_bind. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sigil_socket_owner);
} sigil_socket_owners SEC(".maps");

/* Verdict of the rule maps for one connect. */
struct sigil_verdict {
	__u32 rule_index;
	__u8 action;
	__u8 reason;
};

/* Destination of a connect, IPv4 stored IPv4-mapped. */
struct sigil_destination {
	__u8 addr[16];
	__u16 port;
	__u16 family;
	__u8 protocol;
	__u8 is_v4;
};

/* Reports a bind by a process with an identity; a full ring buffer is counted. */
static __always_inline void emit_bind(struct bpf_sock *sk, int family, __u32 tgid, __u32 subject)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct sigil_bind_record *record;
	__u32 *words;

	/* reserve the record */
	record = bpf_ringbuf_reserve(&sigil_events, sizeof(*record), 0);
	if (!record) {
		sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
		return;
	}

	/* fill it */
	record->header.type = SIGIL_RECORD_BIND;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->tgid = tgid;
	record->ppid = BPF_CORE_READ(task, real_parent, tgid);
	record->uid = (__u32)uid_gid;
	record->gid = uid_gid >> 32;
	record->subject_id = subject;
	record->pad = 0;
	record->cgroup_id = bpf_get_current_cgroup_id();
	record->family = family;
	/* src_port is in host byte order in struct bpf_sock */
	record->port = (__u16)sk->src_port;
	record->protocol = (__u8)sk->protocol;
	__builtin_memset(record->pad2, 0, sizeof(record->pad2));
	words = (__u32 *)record->addr;
	/* family is a constant in each program, so every context read has a fixed offset */
	if (family == AF_INET) {
		words[0] = 0;
		words[1] = 0;
		words[2] = bpf_htonl(0xffff);
		words[3] = sk->src_ip4;
	} else {
		words[0] = sk->src_ip6[0];
		words[1] = sk->src_ip6[1];
		words[2] = sk->src_ip6[2];
		words[3] = sk->src_ip6[3];
	}
	bpf_get_current_comm(record->comm, sizeof(record->comm));

	/* submit */
	bpf_ringbuf_submit(record, 0);
}

/* Records the binding process as the owner of a socket; reports the bind if it has an identity. */
static __always_inline void record_owner(struct bpf_sock *sk, int family)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 subject = sigil_identity_of(tgid);
	struct sigil_socket_owner *owner;

	owner = bpf_sk_storage_get(&sigil_socket_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (owner) {
		owner->tgid = tgid;
		owner->id = subject;
		owner->start_ticks = sigil_start_ticks((struct task_struct *)bpf_get_current_task());
	}
	if (subject)
		emit_bind(sk, family, tgid, subject);
}

SEC("cgroup/post_bind4")
int sigil_post_bind4(struct bpf_sock *sk)
{
	record_owner(sk, AF_INET);
	return SIGIL_SOCK_ALLOW;
}

SEC("cgroup/post_bind6")
int sigil_post_bind6(struct bpf_sock *sk)
{
	record_owner(sk, AF_INET6);
	return SIGIL_SOCK_ALLOW;
}

/* Fills dst from the connect context. */
static __always_inline void read_destination(struct bpf_sock_addr *ctx, int family,
					     struct sigil_destination *dst)
{
	__u32 *words = (__u32 *)dst->addr;

	dst->family = family;
	dst->protocol = ctx->protocol;
	dst->port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		words[0] = 0;
		words[1] = 0;
		words[2] = bpf_htonl(0xffff);
		words[3] = ctx->user_ip4;
		dst->is_v4 = 1;
		/* the kernel sends a connect to 0.0.0.0 to 127.0.0.1, so rules must see 127.0.0.1 */
		if (!words[3])
			words[3] = bpf_htonl(0x7f000001);
		return;
	}
	words[0] = ctx->user_ip6[0];
	words[1] = ctx->user_ip6[1];
	words[2] = ctx->user_ip6[2];
	words[3] = ctx->user_ip6[3];
	/* an IPv4-mapped destination on a dual-stack socket reaches IPv4 listeners */
	dst->is_v4 = words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
	/* the kernel sends a connect to :: to ::1 and one to ::ffff:0.0.0.0 to 127.0.0.1 */
	if (!words[0] && !words[1] && !words[2] && !words[3])
		words[3] = bpf_htonl(1);
	else if (dst->is_v4 && !words[3])
		words[3] = bpf_htonl(0x7f000001);
}

/* Finds the local socket the destination reaches, and returns its owner's identity. */
static __always_inline __u32 find_peer(struct bpf_sock_addr *ctx,
				       const struct sigil_destination *dst, __u32 *peer_tgid)
{
	struct bpf_sock_tuple tuple = {};
	struct sigil_socket_owner *owner;
	struct bpf_sock *sk;
	__u32 tuple_size;
	__u32 peer = 0;
	const __u32 *words = (const __u32 *)dst->addr;

	if (dst->is_v4) {
		tuple.ipv4.daddr = words[3];
		tuple.ipv4.dport = bpf_htons(dst->port);
		tuple_size = sizeof(tuple.ipv4);
	} else {
		__builtin_memcpy(tuple.ipv6.daddr, dst->addr, 16);
		tuple.ipv6.dport = bpf_htons(dst->port);
		tuple_size = sizeof(tuple.ipv6);
	}
	if (dst->protocol == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(ctx, &tuple, tuple_size, SIGIL_CURRENT_NETNS, 0);
	else if (dst->protocol == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(ctx, &tuple, tuple_size, SIGIL_CURRENT_NETNS, 0);
	else
		return 0;
	if (!sk)
		return 0;

	owner = bpf_sk_storage_get(&sigil_socket_owners, sk, 0, 0);
	if (owner) {
		*peer_tgid = owner->tgid;
		peer = sigil_owner_identity(owner->tgid, owner->id, owner->start_ticks);
	}
	bpf_sk_release(sk);
	return peer;
}

/* Raises verdict to the strongest rule of list that matches the destination. */
static __always_inline void scan_rules(const struct sigil_rule_list *list,
				       const struct sigil_destination *dst,
				       struct sigil_verdict *verdict)
{
	__u32 count = list->count;

	for (__u32 i = 0; i < SIGIL_RULES_PER_KEY; i++) {
		const struct sigil_rule *rule = &list->rules[i];

		if (i >= count)
			break;
		if (rule->protocol && rule->protocol != dst->protocol)
			continue;
		if (dst->port < rule->port_lo || dst->port > rule->port_hi)
			continue;
		/* the strongest action wins; among equals, the rule that comes first in the set */
		if (rule->action > verdict->action ||
		    (rule->action == verdict->action && rule->rule_index < verdict->rule_index)) {
			verdict->action = rule->action;
			verdict->rule_index = rule->rule_index;
			verdict->reason = SIGIL_REASON_RULE;
		}
	}
}

/* Applies the rule set of generation gen to a connect from subject to peer at dst. */
static __always_inline void decide(__u32 gen, __u32 subject, __u32 peer,
				   const struct sigil_destination *dst,
				   struct sigil_verdict *verdict)
{
	struct sigil_cidr_key cidr_key = {};
	struct sigil_peer_key peer_key = {};
	struct sigil_rule_list *list;
	struct sigil_subject *settings;
	void *subjects, *peer_rules, *cidr_rules;

	subjects = bpf_map_lookup_elem(&sigil_subjects, &gen);
	if (!subjects)
		return;
	settings = bpf_map_lookup_elem(subjects, &subject);
	if (!settings)
		return;

	/* rules on the peer's identity */
	peer_rules = bpf_map_lookup_elem(&sigil_peer_rules, &gen);
	if (peer && peer_rules) {
		peer_key.subject = subject;
		peer_key.peer = peer;
		list = bpf_map_lookup_elem(peer_rules, &peer_key);
		if (list)
			scan_rules(list, dst, verdict);
	}

	/* rules on the destination address, the longest prefix holding its ancestors' rules */
	cidr_rules = bpf_map_lookup_elem(&sigil_cidr_rules, &gen);
	if (cidr_rules) {
		cidr_key.prefixlen = 32 + 128;
		cidr_key.subject = bpf_htonl(subject);
		__builtin_memcpy(cidr_key.addr, dst->addr, 16);
		list = bpf_map_lookup_elem(cidr_rules, &cidr_key);
		if (list)
			scan_rules(list, dst, verdict);
	}

	/* nothing matched: the posture applies where the subject has Allow rules */
	if (verdict->action == SIGIL_ACTION_NONE &&
	    (settings->flags & SIGIL_SUBJECT_HAS_EGRESS_ALLOW)) {
		verdict->action = settings->egress_posture;
		verdict->reason = SIGIL_REASON_POSTURE;
	}
}

/* Writes a connect record; a full ring buffer is counted, never silent. */
static __always_inline void emit_connect(__u32 tgid, __u32 subject, __u32 peer, __u32 peer_tgid,
					 __u32 gen, const struct sigil_destination *dst,
					 const struct sigil_verdict *verdict, __u8 denied)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct sigil_connect_record *record;

	/* reserve the record */
	record = bpf_ringbuf_reserve(&sigil_events, sizeof(*record), 0);
	if (!record) {
		sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
		return;
	}

	/* fill it */
	record->header.type = SIGIL_RECORD_CONNECT;
	record->header.size = sizeof(*record);
	record->header.ktime_ns = bpf_ktime_get_boot_ns();
	record->tgid = tgid;
	record->ppid = BPF_CORE_READ(task, real_parent, tgid);
	record->uid = (__u32)uid_gid;
	record->gid = uid_gid >> 32;
	record->subject_id = subject;
	record->peer_id = peer;
	record->generation = gen;
	record->rule_index = verdict->rule_index;
	record->cgroup_id = bpf_get_current_cgroup_id();
	record->family = dst->family;
	record->port = dst->port;
	record->protocol = dst->protocol;
	record->action = verdict->action;
	record->reason = verdict->reason;
	record->denied = denied;
	__builtin_memcpy(record->addr, dst->addr, 16);
	record->peer_tgid = peer_tgid;
	record->enforcer = SIGIL_CONNECT_BY_CGROUP;
	bpf_get_current_comm(record->comm, sizeof(record->comm));

	/* submit */
	bpf_ringbuf_submit(record, 0);
}

/* Decides one connect() and returns the socket program verdict. */
static __always_inline int handle_connect(struct bpf_sock_addr *ctx, int family)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sigil_verdict verdict = {};
	struct sigil_destination dst = {};
	struct sigil_settings *settings;
	__u32 zero = 0, subject, peer, peer_tgid = 0, gen;
	__u8 denied;

	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!settings)
		return SIGIL_SOCK_ALLOW;
	gen = settings->generation;

	read_destination(ctx, family, &dst);
	subject = sigil_identity_of(tgid);
	peer = find_peer(ctx, &dst, &peer_tgid);
	decide(gen, subject, peer, &dst, &verdict);

	denied = verdict.action == SIGIL_ACTION_BLOCK;
	if (subject || peer || verdict.action != SIGIL_ACTION_NONE ||
	    (settings->flags & SIGIL_SETTINGS_EMIT_ALL_CONNECTS))
		emit_connect(tgid, subject, peer, peer_tgid, gen, &dst, &verdict, denied);
	return denied ? SIGIL_SOCK_REJECT : SIGIL_SOCK_ALLOW;
}

SEC("cgroup/connect4")
int sigil_connect4(struct bpf_sock_addr *ctx)
{
	return handle_connect(ctx, AF_INET);
}

SEC("cgroup/connect6")
int sigil_connect6(struct bpf_sock_addr *ctx)
{
	return handle_connect(ctx, AF_INET6);
}
