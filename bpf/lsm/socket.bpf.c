// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Identity-keyed egress enforcement with BPF LSM programs, independent of
 * cgroup attachment. lsm/socket_connect applies the egress decision of
 * egress.bpf.h, which the cgroup connect programs share, to each connect()
 * of an AF_INET or AF_INET6 socket.
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
#define TCP_LISTEN 10
/* sizeof(struct sockaddr_in6) without sin6_scope_id, the minimum the kernel accepts */
#define SIN6_LEN_RFC2133 24

/* Reads an AF_INET or AF_INET6 socket address. Returns false for other families or short addresses. */
static __always_inline bool read_endpoint(struct sockaddr *address, int addrlen, __u8 protocol,
					  struct sigil_endpoint *endpoint)
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
	struct sigil_endpoint endpoint = {};
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
		 const struct sigil_endpoint *destination)
{
	struct sigil_lsm_listener *listener;

	__builtin_memcpy(key->addr, addr, 16);
	listener = bpf_map_lookup_elem(&sigil_lsm_listeners, key);
	if (listener && listener_holds_port(listener, destination->port, destination->protocol, true))
		return listener;
	return NULL;
}

/* Returns the identity of the local socket the destination reaches, or 0. */
static __always_inline __u32 find_peer(struct sock *sk, const struct sigil_endpoint *destination,
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

SEC("lsm/socket_connect")
int BPF_PROG(sigil_lsm_socket_connect, struct socket *sock, struct sockaddr *address,
	     int addrlen, int ret)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sigil_endpoint destination = {};
	struct sigil_settings *settings;
	__u32 zero = 0, subject, peer, peer_tgid = 0;
	struct sock *sk;
	__u8 protocol;

	if (ret != 0)
		return ret;
	sk = sock->sk;
	if (!sk)
		return 0;
	settings = bpf_map_lookup_elem(&sigil_settings, &zero);
	if (!settings)
		return 0;

	/* AF_UNSPEC (disconnect), AF_UNIX and the other families are not egress */
	protocol = BPF_CORE_READ(sk, sk_protocol);
	if (!read_endpoint(address, addrlen, protocol, &destination))
		return 0;
	subject = sigil_identity_of(tgid);
	peer = find_peer(sk, &destination, &peer_tgid);
	if (sigil_decide_connect(settings, tgid, subject, peer, peer_tgid, &destination,
				 SIGIL_CONNECT_BY_LSM))
		return -EPERM;
	return 0;
}
