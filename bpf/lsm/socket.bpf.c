// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-keyed egress enforcement with BPF LSM programs, independent of
 * cgroup attachment. lsm/socket_connect applies the egress rule set of
 * bpf/connect.bpf.c (the shared maps sigil_subjects, sigil_peer_rules and
 * sigil_cidr_rules) to each connect() of an AF_INET or AF_INET6 socket, and
 * writes the same SIGIL_RECORD_CONNECT record.
 *
 * LSM programs cannot look sockets up by address (bpf_sk_lookup_tcp is for
 * socket-address programs), so lsm/socket_bind keeps its own table of bound
 * sockets and their owners, and lsm/socket_connect finds the local peer
 * there. An entry counts only while its socket is still bound to the port,
 * which the connect checks on the socket itself.
 *
 * Not covered here: TCP Fast Open (sendto with MSG_FASTOPEN) and unconnected
 * UDP sendto() reach no socket_connect hook.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "lsm_maps.bpf.h"

#define EPERM 1
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_LISTEN 10
/* sizeof(struct sockaddr_in6) without sin6_scope_id, the minimum the kernel accepts */
#define SIN6_LEN_RFC2133 24

/* Verdict of the rule maps for one connect. */
struct egress_verdict {
	__u32 rule_index;
	__u8 action;
	__u8 reason;
};

/* Destination of a connect or address of a bind, IPv4 stored IPv4-mapped. */
struct endpoint {
	__u8 addr[16];
	__u16 port;		/* host byte order */
	__u16 family;
	__u8 protocol;
	__u8 is_v4;
};

/* Reads an AF_INET or AF_INET6 socket address. Returns false for other families or short addresses. */
static __always_inline bool read_endpoint(struct sockaddr *address, int addrlen, __u8 protocol,
					  struct endpoint *endpoint)
{
	__u32 *words = (__u32 *)endpoint->addr;
	struct sockaddr_in6 sin6 = {};
	struct sockaddr_in sin = {};
	__u16 family = 0;

	if (addrlen < (int)sizeof(family) ||
	    bpf_probe_read_kernel(&family, sizeof(family), &address->sa_family))
		return false;
	endpoint->family = family;
	endpoint->protocol = protocol;
	if (family == AF_INET) {
		if (addrlen < (int)sizeof(sin) || bpf_probe_read_kernel(&sin, sizeof(sin), address))
			return false;
		words[0] = 0;
		words[1] = 0;
		words[2] = bpf_htonl(0xffff);
		words[3] = sin.sin_addr.s_addr;
		endpoint->port = bpf_ntohs(sin.sin_port);
		endpoint->is_v4 = 1;
		return true;
	}
	if (family == AF_INET6) {
		if (addrlen < SIN6_LEN_RFC2133 ||
		    bpf_probe_read_kernel(&sin6, SIN6_LEN_RFC2133, address))
			return false;
		__builtin_memcpy(endpoint->addr, &sin6.sin6_addr, 16);
		endpoint->port = bpf_ntohs(sin6.sin6_port);
		/* an IPv4-mapped address on a dual-stack socket reaches IPv4 sockets */
		endpoint->is_v4 = words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
		return true;
	}
	return false;
}

static __always_inline __u32 netns_of(struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/*
 * Returns whether the socket of a listener entry is still bound to port: the
 * same cookie (so the struct sock was not freed and reused) and the same
 * local port. For TCP it must also be listening when must_listen is set.
 */
static __always_inline bool listener_holds_port(const struct sigil_lsm_listener *listener,
						__u16 port, __u8 protocol, bool must_listen)
{
	struct sock *sk = (struct sock *)listener->sock;
	__u64 cookie = 0;
	__u16 bound_port = 0;
	__u8 state = 0;

	if (!sk)
		return false;
	/* the struct sock may be freed by now: read it only through bpf_probe_read_kernel */
	if (bpf_probe_read_kernel(&cookie, sizeof(cookie), &sk->__sk_common.skc_cookie.counter) ||
	    cookie != listener->cookie)
		return false;
	if (bpf_probe_read_kernel(&bound_port, sizeof(bound_port), &sk->__sk_common.skc_num) ||
	    bound_port != port)
		return false;
	if (must_listen && protocol == IPPROTO_TCP) {
		if (bpf_probe_read_kernel(&state, sizeof(state),
					  (const void *)&sk->__sk_common.skc_state) ||
		    state != TCP_LISTEN)
			return false;
	}
	return true;
}

SEC("lsm/socket_bind")
int BPF_PROG(sigil_lsm_socket_bind, struct socket *sock, struct sockaddr *address, int addrlen,
	     int ret)
{
	struct sigil_lsm_listener_key key = {};
	struct sigil_lsm_listener listener = {};
	struct sigil_lsm_listener *existing;
	struct endpoint endpoint = {};
	struct sock *sk;
	__u8 protocol;

	if (ret != 0)
		return ret;
	sk = sock->sk;
	if (!sk)
		return 0;
	protocol = BPF_CORE_READ(sk, sk_protocol);
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
		return 0;
	/* port 0 requests an ephemeral port, which is not known yet */
	if (!read_endpoint(address, addrlen, protocol, &endpoint) || endpoint.port == 0)
		return 0;

	__builtin_memcpy(key.addr, endpoint.addr, 16);
	key.netns = netns_of(sk);
	key.port = endpoint.port;
	key.protocol = protocol;

	/*
	 * A live socket keeps the entry: this bind then fails with EADDRINUSE, or
	 * shares the port (SO_REUSEADDR, SO_REUSEPORT) and the first owner stays.
	 */
	existing = bpf_map_lookup_elem(&sigil_lsm_listeners, &key);
	if (existing && existing->sock != (__u64)sk &&
	    listener_holds_port(existing, endpoint.port, protocol, false))
		return 0;

	listener.sock = (__u64)sk;
	listener.cookie = bpf_get_socket_cookie(sk);
	listener.tgid = bpf_get_current_pid_tgid() >> 32;
	listener.id = sigil_identity_of(listener.tgid);
	listener.start_ticks = sigil_start_ticks((struct task_struct *)bpf_get_current_task());
	bpf_map_update_elem(&sigil_lsm_listeners, &key, &listener, BPF_ANY);
	return 0;
}

/* Looks up a listener entry under addr and returns it when its socket still listens. */
static __always_inline struct sigil_lsm_listener *
find_listener_at(struct sigil_lsm_listener_key *key, const __u8 *addr,
		 const struct endpoint *destination)
{
	struct sigil_lsm_listener *listener;

	__builtin_memcpy(key->addr, addr, 16);
	listener = bpf_map_lookup_elem(&sigil_lsm_listeners, key);
	if (listener && listener_holds_port(listener, destination->port, destination->protocol, true))
		return listener;
	return NULL;
}

/* Returns the identity of the local socket the destination reaches, or 0. */
static __always_inline __u32 find_peer(struct sock *sk, const struct endpoint *destination,
				       __u32 *peer_tgid)
{
	/* ::ffff:0.0.0.0 and :: are the wildcard addresses of IPv4 and IPv6 */
	const __u8 any_v4[16] = { [10] = 0xff, [11] = 0xff };
	const __u8 any_v6[16] = {};
	struct sigil_lsm_listener_key key = {};
	struct sigil_lsm_listener *listener;

	key.netns = netns_of(sk);
	key.port = destination->port;
	key.protocol = destination->protocol;

	/* a socket bound to the address itself, then one bound to the wildcard */
	listener = find_listener_at(&key, destination->addr, destination);
	if (!listener && destination->is_v4)
		listener = find_listener_at(&key, any_v4, destination);
	if (!listener)
		listener = find_listener_at(&key, any_v6, destination);
	if (!listener)
		return 0;

	*peer_tgid = listener->tgid;
	return sigil_owner_identity(listener->tgid, listener->id, listener->start_ticks);
}

/*
 * Raises verdict to the strongest rule of list that matches the destination.
 * NOTE: this and the egress decision below repeat bpf/connect.bpf.c; a change
 * to one must be made to both until they move to a shared header.
 */
static __always_inline void scan_rules(const struct sigil_rule_list *list,
				       const struct endpoint *destination,
				       struct egress_verdict *verdict)
{
	__u32 count = list->count;

	for (__u32 i = 0; i < SIGIL_RULES_PER_KEY; i++) {
		const struct sigil_rule *rule = &list->rules[i];

		if (i >= count)
			break;
		if (rule->protocol && rule->protocol != destination->protocol)
			continue;
		if (destination->port < rule->port_lo || destination->port > rule->port_hi)
			continue;
		if (rule->action > verdict->action ||
		    (rule->action == verdict->action && rule->rule_index < verdict->rule_index)) {
			verdict->action = rule->action;
			verdict->rule_index = rule->rule_index;
			verdict->reason = SIGIL_REASON_RULE;
		}
	}
}

/* Applies the egress rule set of generation gen, as bpf/connect.bpf.c does. */
static __always_inline void decide_egress(__u32 gen, __u32 subject, __u32 peer,
					  const struct endpoint *destination,
					  struct egress_verdict *verdict)
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

	peer_rules = bpf_map_lookup_elem(&sigil_peer_rules, &gen);
	if (peer && peer_rules) {
		peer_key.subject = subject;
		peer_key.peer = peer;
		list = bpf_map_lookup_elem(peer_rules, &peer_key);
		if (list)
			scan_rules(list, destination, verdict);
	}

	cidr_rules = bpf_map_lookup_elem(&sigil_cidr_rules, &gen);
	if (cidr_rules) {
		cidr_key.prefixlen = 32 + 128;
		cidr_key.subject = bpf_htonl(subject);
		__builtin_memcpy(cidr_key.addr, destination->addr, 16);
		list = bpf_map_lookup_elem(cidr_rules, &cidr_key);
		if (list)
			scan_rules(list, destination, verdict);
	}

	if (verdict->action == SIGIL_ACTION_NONE &&
	    (settings->flags & SIGIL_SUBJECT_HAS_EGRESS_ALLOW)) {
		verdict->action = settings->egress_posture;
		verdict->reason = SIGIL_REASON_POSTURE;
	}
}

/* Writes a connect record; a full ring buffer is counted, never silent. */
static __always_inline void emit_connect(__u32 tgid, __u32 subject, __u32 peer, __u32 peer_tgid,
					 __u32 gen, const struct endpoint *destination,
					 const struct egress_verdict *verdict, __u8 denied)
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
	record->family = destination->family;
	record->port = destination->port;
	record->protocol = destination->protocol;
	record->action = verdict->action;
	record->reason = verdict->reason;
	record->denied = denied;
	__builtin_memcpy(record->addr, destination->addr, 16);
	record->peer_tgid = peer_tgid;
	record->enforcer = SIGIL_CONNECT_BY_LSM;
	bpf_get_current_comm(record->comm, sizeof(record->comm));

	/* submit */
	bpf_ringbuf_submit(record, 0);
}

SEC("lsm/socket_connect")
int BPF_PROG(sigil_lsm_socket_connect, struct socket *sock, struct sockaddr *address,
	     int addrlen, int ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct egress_verdict verdict = {};
	struct endpoint destination = {};
	struct sigil_settings *settings;
	__u32 zero = 0, subject, peer, peer_tgid = 0, gen;
	struct sock *sk;
	__u8 protocol, denied;

	if (ret != 0)
		return ret;
	sk = sock->sk;
	if (!sk)
		return 0;
	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!settings)
		return 0;
	gen = settings->generation;

	/* AF_UNSPEC (disconnect), AF_UNIX and the other families are not egress */
	protocol = BPF_CORE_READ(sk, sk_protocol);
	if (!read_endpoint(address, addrlen, protocol, &destination))
		return 0;
	subject = sigil_identity_of(tgid);
	peer = find_peer(sk, &destination, &peer_tgid);
	decide_egress(gen, subject, peer, &destination, &verdict);

	denied = verdict.action == SIGIL_ACTION_BLOCK;
	if (subject || peer || verdict.action != SIGIL_ACTION_NONE ||
	    (settings->flags & SIGIL_SETTINGS_EMIT_ALL_CONNECTS))
		emit_connect(tgid, subject, peer, peer_tgid, gen, &destination, &verdict, denied);
	return denied ? -EPERM : 0;
}
