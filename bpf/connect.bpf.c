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

#include "egress.bpf.h"

#define SIGIL_CURRENT_NETNS (-1)

/* Socket programs of this type allow the call with 1 and reject it with EPERM with 0. */
#define SIGIL_SOCK_ALLOW 1
#define SIGIL_SOCK_REJECT 0

/* Owner of each bound socket, written at post_bind. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sigil_socket_owner);
} sigil_socket_owners SEC(".maps");

/* Reports a bind by a process with an identity; a full ring buffer is counted. */
static __always_inline void emit_bind(struct bpf_sock *sk, int family, __u32 tgid, __u32 subject)
{
	struct sigil_bind_record *record;
	__u32 *words;

	/* reserve the record */
	record = sigil_reserve_event(SIGIL_RECORD_BIND, sizeof(*record));
	if (!record)
		return;

	/* fill it */
	record->tgid = tgid;
	sigil_current_ids(&record->ppid, &record->uid, &record->gid);
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
					     struct sigil_endpoint *dst)
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
				       const struct sigil_endpoint *dst, __u32 *peer_tgid)
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

/* Decides one connect() and returns the socket program verdict. */
static __always_inline int handle_connect(struct bpf_sock_addr *ctx, int family)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sigil_endpoint dst = {};
	struct sigil_settings *settings;
	__u32 zero = 0, subject, peer, peer_tgid = 0;

	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!settings)
		return SIGIL_SOCK_ALLOW;

	read_destination(ctx, family, &dst);
	subject = sigil_identity_of(tgid);
	peer = find_peer(ctx, &dst, &peer_tgid);
	if (sigil_decide_connect(settings, tgid, subject, peer, peer_tgid, &dst,
				 SIGIL_CONNECT_BY_CGROUP))
		return SIGIL_SOCK_REJECT;
	return SIGIL_SOCK_ALLOW;
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
