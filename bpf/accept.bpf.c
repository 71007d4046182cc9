// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Accept records: which process accepted a TCP connection, from which client.
 *
 * The sys_exit tracepoints of accept() and accept4() run in the accepting
 * process, after the system call has installed the new socket in its file
 * table, so they give both the process and the connection. The host kernel
 * refuses the LSM socket_accept hook and fexit programs, and the socket
 * programs that see a passive connection (sock_ops PASSIVE_ESTABLISHED) run
 * in softirq context, where the current task is not the server. These
 * programs run only on the two accept system calls. But while any syscalls
 * tracepoint is attached, every system call of the node takes the kernel's
 * traced entry path, which costs a bitmap test for a call without a
 * program. The tracepoint-kill object attaches such tracepoints too.
 *
 * The client of a loopback connection is a process of this node. The
 * inet_sock_set_state raw tracepoint records it when its socket enters
 * SYN_SENT inside its connect(), and files it under both ends of the
 * connection when the socket reaches ESTABLISHED, before the server can
 * accept it. The program returns at once for other state changes. The
 * sockops callback TCP_CONNECT_CB would see the same moment, but Linux 6.1
 * gives sockops programs no bpf_get_current_pid_tgid(). The accept program
 * takes the entry out again.
 *
 * Not covered: accepts through io_uring and through the i386 system call
 * ABI, since neither reaches these tracepoints. Also connections accepted
 * before the programs were attached, UDP (it has no accept), stream
 * protocols other than TCP, and the client's identity for a connection to
 * a non-loopback address of the node.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "maps.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define IPPROTO_TCP 6
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2

/* Client of each loopback TCP connection not yet accepted, by both ends. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SIGIL_MAX_LOCAL_CLIENTS);
	__type(key, struct sigil_local_client_key);
	__type(value, struct sigil_socket_owner);
} sigil_local_clients SEC(".maps");

/* Client of each loopback TCP connection in SYN_SENT, by the address of its struct sock. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SIGIL_MAX_LOCAL_CLIENTS);
	__type(key, __u64);
	__type(value, struct sigil_socket_owner);
} sigil_connecting_clients SEC(".maps");

/* Stores an IPv4 address (network byte order) IPv4-mapped in 16 bytes. */
static __always_inline void map_ipv4(__u8 *addr, __u32 ip4)
{
	__u32 *words = (__u32 *)addr;

	words[0] = 0;
	words[1] = 0;
	words[2] = bpf_htonl(0xffff);
	words[3] = ip4;
}

static __always_inline bool is_ipv4_mapped(const __u32 *words)
{
	return words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
}

/* Returns whether a 16-byte address is 127.0.0.0/8 (IPv4-mapped) or ::1. */
static __always_inline bool is_loopback(const __u8 *addr)
{
	const __u32 *words = (const __u32 *)addr;

	if (is_ipv4_mapped(words))
		return (bpf_ntohl(words[3]) >> 24) == 127;
	return words[0] == 0 && words[1] == 0 && words[2] == 0 && words[3] == bpf_htonl(1);
}

/*
 * Reads both ends of a TCP socket, IPv4-mapped for IPv4. An IPv6 socket
 * connected to an IPv4 peer keeps the peer IPv4-mapped in its IPv6 fields,
 * but sets its own IPv6 address only when connect() is done, so the IPv4
 * fields are read for it.
 */
static __always_inline void read_ends(struct sock *sk, __u8 *remote, __u8 *local)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6) {
		BPF_CORE_READ_INTO((struct in6_addr *)remote, sk, __sk_common.skc_v6_daddr);
		if (!is_ipv4_mapped((const __u32 *)remote)) {
			BPF_CORE_READ_INTO((struct in6_addr *)local, sk, __sk_common.skc_v6_rcv_saddr);
			return;
		}
	}
	map_ipv4(remote, BPF_CORE_READ(sk, __sk_common.skc_daddr));
	map_ipv4(local, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
}

/* Remembers the connecting process, in its connect(), when the destination is loopback. */
static __always_inline void remember_connecting(struct sock *sk)
{
	struct sigil_socket_owner owner = {};
	__u64 sk_key = (__u64)sk;
	__u8 client[16], server[16];

	read_ends(sk, server, client);
	if (!is_loopback(server))
		return;
	owner.tgid = bpf_get_current_pid_tgid() >> 32;
	owner.id = sigil_identity_of(owner.tgid);
	if (!owner.id)
		return;
	owner.start_ticks = sigil_start_ticks((struct task_struct *)bpf_get_current_task());
	bpf_map_update_elem(&sigil_connecting_clients, &sk_key, &owner, BPF_ANY);
}

/*
 * Moves the client of a connection that reached ESTABLISHED to the key of
 * both ends, which the server's accept() can build. Where the client had no
 * identity, an entry left under that key by an earlier connection that was
 * never accepted is removed, so it cannot name the wrong client.
 */
static __always_inline void publish_client(struct sock *sk)
{
	struct sigil_local_client_key key = {};
	struct sigil_socket_owner *owner;
	__u64 sk_key = (__u64)sk;

	read_ends(sk, key.server_addr, key.client_addr);
	if (!is_loopback(key.server_addr))
		return;
	key.netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	key.client_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	key.server_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	owner = bpf_map_lookup_elem(&sigil_connecting_clients, &sk_key);
	if (!owner) {
		bpf_map_delete_elem(&sigil_local_clients, &key);
		return;
	}
	bpf_map_update_elem(&sigil_local_clients, &key, owner, BPF_ANY);
	bpf_map_delete_elem(&sigil_connecting_clients, &sk_key);
}

/*
 * Follows the client side of TCP connections. CLOSE to SYN_SENT happens in
 * tcp_v4_connect() or tcp_v6_connect(), inside the client's connect(), after
 * the destination is set. SYN_SENT to ESTABLISHED happens when the SYN-ACK
 * arrives, before the client's ACK lets the server accept the connection.
 * A raw tracepoint, because it skips building the tracepoint's record for
 * the many state changes that return at once.
 */
SEC("raw_tp/inet_sock_set_state")
int sigil_tcp_state(struct bpf_raw_tracepoint_args *ctx)
{
	/* TP_PROTO(const struct sock *sk, const int oldstate, const int newstate) */
	struct sock *sk = (struct sock *)ctx->args[0];
	int oldstate = ctx->args[1], newstate = ctx->args[2];
	__u64 sk_key;

	if (newstate != TCP_SYN_SENT && oldstate != TCP_SYN_SENT)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		remember_connecting(sk);
		return 0;
	}
	if (newstate == TCP_ESTABLISHED) {
		publish_client(sk);
		return 0;
	}
	/* the connect failed */
	sk_key = (__u64)sk;
	bpf_map_delete_elem(&sigil_connecting_clients, &sk_key);
	return 0;
}

/* Returns the socket behind a file descriptor of the current process, or NULL. */
static __always_inline struct sock *socket_of_fd(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *sock;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_core_read(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	/* another thread may have closed the descriptor and reused it for something else */
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/* Finds and removes the local client of the connection; returns its identity. */
static __always_inline __u32 take_local_client(struct sock *sk,
					       const struct sigil_accept_record *record,
					       __u32 *peer_tgid)
{
	struct sigil_local_client_key key = {};
	struct sigil_socket_owner *owner;
	__u32 peer;

	if (!is_loopback(record->local_addr))
		return 0;
	key.netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	__builtin_memcpy(key.client_addr, record->addr, 16);
	__builtin_memcpy(key.server_addr, record->local_addr, 16);
	key.client_port = record->port;
	key.server_port = record->local_port;
	owner = bpf_map_lookup_elem(&sigil_local_clients, &key);
	if (!owner)
		return 0;
	*peer_tgid = owner->tgid;
	peer = sigil_owner_identity(owner->tgid, owner->id, owner->start_ticks);
	bpf_map_delete_elem(&sigil_local_clients, &key);
	return peer;
}

/* Writes the record of one accepted TCP connection; a full ring buffer is counted. */
static __always_inline int handle_accept(struct syscall_trace_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct sigil_accept_record record = {};
	struct sigil_settings *settings;
	__u32 zero = 0;
	struct sock *sk;

	if (ctx->ret < 0)
		return 0;
	sk = socket_of_fd(ctx->ret);
	if (!sk)
		return 0;
	record.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (record.family != AF_INET && record.family != AF_INET6)
		return 0;
	/* MPTCP and SCTP stream sockets accept too; ingress rules decide TCP only */
	record.protocol = BPF_CORE_READ(sk, sk_protocol);
	if (record.protocol != IPPROTO_TCP)
		return 0;

	/* both ends and both identities */
	read_ends(sk, record.addr, record.local_addr);
	record.port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	record.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	record.tgid = pid_tgid >> 32;
	record.subject_id = sigil_identity_of(record.tgid);
	record.peer_id = take_local_client(sk, &record, &record.peer_tgid);

	/* accepts between processes without identities are reported only when a policy needs them */
	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!record.subject_id && !record.peer_id &&
	    !(settings && (settings->flags & SIGIL_SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS)))
		return 0;

	/* the process */
	record.header.type = SIGIL_RECORD_ACCEPT;
	record.header.size = sizeof(record);
	record.header.ktime_ns = bpf_ktime_get_boot_ns();
	record.pid = (__u32)pid_tgid;
	record.ppid = BPF_CORE_READ(task, real_parent, tgid);
	record.uid = (__u32)uid_gid;
	record.gid = uid_gid >> 32;
	record.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(record.comm, sizeof(record.comm));

	/* copy it into the ring buffer */
	if (bpf_ringbuf_output(&sigil_events, &record, sizeof(record), 0))
		sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sigil_accept4(struct syscall_trace_exit *ctx)
{
	return handle_accept(ctx);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sigil_accept(struct syscall_trace_exit *ctx)
{
	return handle_accept(ctx);
}
