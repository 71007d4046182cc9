/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Record layouts and map keys shared by the BPF programs and user space.
 * This header is the only definition: src/kernel/layout.ts mirrors it and
 * test/kernel/layout.test.ts checks the two against each other.
 * Fixed-width types only; every struct is padded by hand to a multiple of 8.
 */
#ifndef SIGIL_H
#define SIGIL_H

#define SIGIL_PATH_MAX 256
#define SIGIL_COMM_LEN 16

/* Map sizes. User space creates the inner rule maps with the same sizes. */
#define SIGIL_MAX_PROCESSES 131072
#define SIGIL_MAX_SUBJECTS 65536
#define SIGIL_MAX_PEER_KEYS 262144
#define SIGIL_MAX_CIDR_KEYS 262144
/* Loopback TCP connections whose client is remembered until the server accepts them. */
#define SIGIL_MAX_LOCAL_CLIENTS 65536
#define SIGIL_GENERATIONS 4
/* Decision records: connect, bind and the LSM object's exec and file decisions. */
#define SIGIL_RINGBUF_BYTES (16 * 1024 * 1024)
/*
 * Process records (fork, exec, exit) have a ring buffer of their own, so a flood of
 * decision records cannot push out the exec records that identities depend on.
 */
#define SIGIL_PROCESS_RINGBUF_BYTES (8 * 1024 * 1024)

/* Rule entries one (subject, peer) pair or one CIDR chain can hold. */
#define SIGIL_RULES_PER_KEY 16

/* 64-bit words of a subject's set of CIDR prefix lengths (0..128). */
#define SIGIL_CIDR_LENGTH_WORDS 3

/* Record types carried in sigil_record_header.type. */
enum sigil_record_type {
	SIGIL_RECORD_EXEC = 1,
	SIGIL_RECORD_EXIT = 2,
	SIGIL_RECORD_CONNECT = 3,
	SIGIL_RECORD_FORK = 4,
	SIGIL_RECORD_BIND = 5,
	SIGIL_RECORD_CGROUP = 6,
	SIGIL_RECORD_ACCEPT = 7,
};

/* Actions a rule or a posture can take. */
enum sigil_action {
	SIGIL_ACTION_NONE = 0,
	SIGIL_ACTION_ALLOW = 1,
	SIGIL_ACTION_AUDIT = 2,
	SIGIL_ACTION_BLOCK = 3,
};

/* Reason for a connect decision, carried in sigil_connect_record.reason. */
enum sigil_decision_reason {
	SIGIL_REASON_NO_POLICY = 0,	/* the subject has no egress rules: allowed */
	SIGIL_REASON_RULE = 1,		/* a rule matched; rule_index names it */
	SIGIL_REASON_POSTURE = 2,	/* no rule matched and the subject has Allow rules */
};

/* Reasons a record could not be written, indexes of the drops map. */
enum sigil_drop_reason {
	SIGIL_DROP_EVENTS_RINGBUF_FULL = 0,	/* sigil_events full: a decision record */
	SIGIL_DROP_PROCESS_RINGBUF_FULL = 1,	/* sigil_process_events full: fork, exec or exit */
	SIGIL_DROP_REASONS = 2,
};

/*
 * Flags of sigil_subject.flags. NO_PEER_RULES lets the connect programs
 * skip the peer-rule map, which contains no entry of the subject. It states
 * an absence, so an entry written without it (flags 0) still gets the
 * lookup. A missing flag costs time but never changes a verdict.
 */
#define SIGIL_SUBJECT_HAS_EGRESS_ALLOW (1u << 0)
#define SIGIL_SUBJECT_NO_PEER_RULES (1u << 1)

/* Value of the settings array map (one entry, index 0). */
struct sigil_settings {
	__u32 generation;	/* rule-set generation the programs read */
	__u32 flags;
	__u32 pad[2];
};

#define SIGIL_SETTINGS_EMIT_ALL_CONNECTS (1u << 0)
/* Report exec and open decisions that no Audit or Block applied to, to record what a workload does. */
#define SIGIL_SETTINGS_REPORT_ALLOWED_ACCESS (1u << 1)
/* Report accepts where neither the server nor the client has an identity (ingress rules select such servers). */
#define SIGIL_SETTINGS_REPORT_UNIDENTIFIED_ACCEPTS (1u << 2)

/*
 * Start times are kept in clock ticks since boot, the unit of field 22 of
 * /proc/<pid>/stat, so that the kernel and user space write the same value.
 * USER_HZ is 100 on every architecture Sigil builds for.
 */
#define SIGIL_NSEC_PER_CLOCK_TICK 10000000ULL

/* Value of the identities map, keyed by tgid (__u32). */
struct sigil_identity {
	__u32 id;		/* small integer for a SPIFFE ID; 0 means no identity */
	__u32 flags;
	__u64 start_ticks;	/* the process's start time, which tells a reused tgid apart; 0 if unknown */
};

/* Flag of sigil_identity.flags: the id was copied from the parent at fork or exec. */
#define SIGIL_IDENTITY_INHERITED (1u << 0)

/* Per-subject settings of one rule-set generation, keyed by identity id (__u32). */
struct sigil_subject {
	__u32 flags;
	__u8 egress_posture;	/* enum sigil_action used when no egress rule matches */
	__u8 pad[3];
	/*
	 * The prefix lengths of the subject's CIDR entries: bit n % 64 of word
	 * n / 64 is set when an entry has prefix length 128 - n, so the lowest
	 * set bit is the longest length. The CIDR lookup tries only these.
	 */
	__u64 cidr_lengths[SIGIL_CIDR_LENGTH_WORDS];
};

/* One rule in kernel form: port range, protocol and action. */
struct sigil_rule {
	__u16 port_lo;		/* host byte order; 0..65535 */
	__u16 port_hi;
	__u8 protocol;		/* IPPROTO_TCP, IPPROTO_UDP, or 0 for any */
	__u8 action;		/* enum sigil_action */
	__u16 pad;
	__u32 rule_index;	/* index into the generation's rule table in user space */
};

/* Value of the peer-rule and CIDR-rule maps: the rules for one key, in order. */
struct sigil_rule_list {
	__u32 count;
	__u32 pad;
	struct sigil_rule rules[SIGIL_RULES_PER_KEY];
};

/* Key of the peer-rule map: the subject's and the peer's identity ids. */
struct sigil_peer_key {
	__u32 subject;
	__u32 peer;
};

/*
 * Key of the CIDR-rule hash map: one entry per subject and prefix. prefixlen
 * counts the 32 bits of subject plus the address bits, and the address bits
 * past the prefix are zero. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d), so an IPv4 /n is an IPv6 /(96 + n) and one map serves
 * both families.
 */
struct sigil_cidr_key {
	__u32 prefixlen;
	__u32 subject;		/* big-endian, as in the prefix it starts */
	__u8 addr[16];
};

/* Value stored on a socket at bind time (socket local storage). */
struct sigil_socket_owner {
	__u32 tgid;
	__u32 id;		/* identity of the owner when it bound */
	__u64 start_ticks;	/* the owner's start time, to detect a reused tgid */
};

/* Header of every ring-buffer record. */
struct sigil_record_header {
	__u32 type;		/* enum sigil_record_type */
	__u32 size;		/* whole record, header included */
	__u64 ktime_ns;		/* bpf_ktime_get_boot_ns() */
};

struct sigil_exec_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 inherited_id;	/* identity the process has until user space attests it */
	__u32 pad;
	__u64 start_boottime_ns;	/* task->start_boottime, to detect pid reuse */
	__u64 parent_start_boottime_ns;	/* the same for the parent (real_parent) */
	__u64 cgroup_id;
	char comm[SIGIL_COMM_LEN];
	char filename[SIGIL_PATH_MAX];
};

/* A new process (not a thread): the child's tgid and its parent's. */
struct sigil_fork_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 ppid;
	__u64 start_boottime_ns;
	__u64 parent_start_boottime_ns;
};

/* A task moved to another cgroup, from tracepoint cgroup/cgroup_attach_task. */
struct sigil_cgroup_record {
	struct sigil_record_header header;
	__u32 pid;		/* the moved task: a thread id, equal to the tgid for a process's leader */
	__s32 dst_root;		/* hierarchy id of the destination cgroup */
	__u64 dst_id;		/* id of the destination cgroup */
};

struct sigil_exit_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 exit_code;	/* wait status: exit status << 8, or the signal number */
	__u64 start_boottime_ns;
};

struct sigil_connect_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 subject_id;
	__u32 peer_id;
	__u32 generation;	/* rule-set generation that decided */
	__u32 rule_index;	/* valid when reason is SIGIL_REASON_RULE */
	__u64 cgroup_id;
	__u16 family;		/* AF_INET or AF_INET6 */
	__u16 port;		/* destination port, host byte order */
	__u8 protocol;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 action;		/* enum sigil_action that applied */
	__u8 reason;		/* enum sigil_decision_reason */
	__u8 denied;		/* 1 when connect() returned EPERM */
	__u8 addr[16];		/* destination, IPv4-mapped for AF_INET */
	__u32 peer_tgid;	/* owner of the local listener, 0 when none was found */
	__u32 enforcer;		/* enum sigil_connect_enforcer: the program that decided */
	char comm[SIGIL_COMM_LEN];
};

/* Programs that write sigil_connect_record, in sigil_connect_record.enforcer. */
enum sigil_connect_enforcer {
	SIGIL_CONNECT_BY_CGROUP = 0,	/* cgroup/connect4 and cgroup/connect6 */
	SIGIL_CONNECT_BY_LSM = 1,	/* lsm/socket_connect */
};

/* A bind() by a process with an identity, from the post_bind programs. */
struct sigil_bind_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 subject_id;
	__u32 pad;
	__u64 cgroup_id;
	__u16 family;		/* AF_INET or AF_INET6 */
	__u16 port;		/* bound port, host byte order */
	__u8 protocol;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad2[3];
	__u8 addr[16];		/* bound address, IPv4-mapped for AF_INET */
	char comm[SIGIL_COMM_LEN];
};

/*
 * Key of the local-clients map: one TCP connection to a loopback address, as
 * its client recorded it at connect() and its server reads it at accept().
 * Addresses are IPv4-mapped for IPv4; ports are in host byte order.
 */
struct sigil_local_client_key {
	__u64 netns_cookie;	/* network namespace of the connection */
	__u8 client_addr[16];
	__u8 server_addr[16];
	__u16 client_port;
	__u16 server_port;
	__u32 pad;
};

/*
 * A TCP connection accepted with accept() or accept4(), from the sys_exit
 * tracepoints of those system calls. Nothing is decided in the kernel.
 */
struct sigil_accept_record {
	struct sigil_record_header header;
	__u32 tgid;
	__u32 pid;		/* the thread that called accept() */
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 subject_id;	/* identity of the accepting process; 0 for none */
	__u32 peer_id;		/* identity of the local client; 0 for none or not local */
	__u32 peer_tgid;	/* the process that called connect(), 0 when not known */
	__u64 cgroup_id;
	__u16 family;		/* AF_INET or AF_INET6: the accepted socket's family */
	__u16 protocol;		/* sk_protocol, IPPROTO_TCP in this version */
	__u16 port;		/* the client's port, host byte order */
	__u16 local_port;	/* the port the connection reached, host byte order */
	__u8 addr[16];		/* the client's address, IPv4-mapped for IPv4 */
	__u8 local_addr[16];	/* the address the connection reached, IPv4-mapped for IPv4 */
	char comm[SIGIL_COMM_LEN];
};

#endif /* SIGIL_H */
