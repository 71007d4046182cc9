/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys, map values and ring-buffer records of the BPF LSM programs
 * (bpf/lsm/, linked into bpf/.output/sigil-lsm.bpf.o). This header is the
 * only definition: src/kernel/lsm-layout.ts mirrors it and
 * test/kernel/lsm-layout.test.ts checks the two against each other.
 * Fixed-width types only; every struct is padded by hand to a multiple of 8.
 */
#ifndef SIGIL_LSM_H
#define SIGIL_LSM_H

#include "sigil.h"

/*
 * Size of the buffer that bpf_d_path fills, PATH_MAX. bpf_d_path does not
 * truncate: it fails with -ENAMETOOLONG when the path and its NUL need more,
 * and then no directory rule can match (see path.bpf.h).
 */
#define SIGIL_LSM_PATH_BUFFER 4096

/* Map sizes. User space creates the inner rule maps with the same sizes. */
#define SIGIL_LSM_MAX_INODE_KEYS 262144
#define SIGIL_LSM_MAX_DIRECTORY_KEYS 262144
#define SIGIL_LSM_MAX_LISTENERS 65536

/*
 * Record types of the LSM programs. They start at 16 so that sigil.h can add
 * types below without a clash. lsm/socket_connect writes the
 * SIGIL_RECORD_CONNECT record of sigil.h.
 */
enum sigil_lsm_record_type {
	SIGIL_RECORD_EXEC_DECISION = 16,
	SIGIL_RECORD_FILE_DECISION = 17,
};

/* Kind of a path rule: program execution or file opens. */
enum sigil_lsm_kind {
	SIGIL_LSM_KIND_EXEC = 1,	/* lsm/bprm_check_security */
	SIGIL_LSM_KIND_FILE = 2,	/* lsm/file_open */
};

/* Match type of the rule that decided, carried in the decision records. */
enum sigil_lsm_match {
	SIGIL_LSM_MATCH_NONE = 0,	/* no rule matched */
	SIGIL_LSM_MATCH_INODE = 1,	/* an exact-file rule on the (device, inode) */
	SIGIL_LSM_MATCH_DIRECTORY = 2,	/* a non-recursive rule on the parent directory, or a rule on the opened directory itself */
	SIGIL_LSM_MATCH_SUBTREE = 3,	/* a recursive rule on an ancestor directory */
};

/* Flags of sigil_lsm_subject.flags. */
#define SIGIL_LSM_SUBJECT_HAS_EXEC_ALLOW (1u << 0)
#define SIGIL_LSM_SUBJECT_HAS_FILE_ALLOW (1u << 1)
/*
 * The subject has no directory rules of the kind, so the BPF LSM programs
 * resolve the path only for a record. Set by the LSM compiler only: an entry
 * without these flags (tracepoint-kill's, or an older agent's) has its
 * directory rules looked up.
 */
#define SIGIL_LSM_SUBJECT_NO_EXEC_DIRECTORIES (1u << 2)
#define SIGIL_LSM_SUBJECT_NO_FILE_DIRECTORIES (1u << 3)
/*
 * The subject has no exact-file rules of the kind, so the BPF LSM programs
 * skip the inode lookup. Set by the LSM compiler only, like the flags above.
 */
#define SIGIL_LSM_SUBJECT_NO_EXEC_INODES (1u << 4)
#define SIGIL_LSM_SUBJECT_NO_FILE_INODES (1u << 5)

/*
 * Directory rules are keyed by a 64-bit FNV-1a hash of the directory's path
 * with a trailing '/' ("/" for the root, "/usr/lib/" for /usr/lib). The hash
 * starts from SIGIL_LSM_FNV_OFFSET_BASIS XOR the seed of sigil_lsm_config,
 * and each byte b updates it as hash = (hash ^ b) * SIGIL_LSM_FNV_PRIME
 * modulo 2^64.
 */
#define SIGIL_LSM_FNV_OFFSET_BASIS 0xcbf29ce484222325ULL
#define SIGIL_LSM_FNV_PRIME 0x00000100000001b3ULL

/* Value of the sigil_lsm_config array map (one entry, index 0). */
struct sigil_lsm_config {
	__u64 hash_seed;	/* random per loaded object; user space writes it before the first rule set */
};

/* Per-subject settings of one rule-set generation, keyed by identity id (__u32). */
struct sigil_lsm_subject {
	__u32 flags;		/* SIGIL_LSM_SUBJECT_HAS_* and SIGIL_LSM_SUBJECT_NO_* */
	__u8 exec_posture;	/* enum sigil_action when no exec rule matches */
	__u8 file_posture;	/* enum sigil_action when no file rule matches */
	__u8 pad[2];
};

/* The strongest action of the rules that share one key, and the first such rule. */
struct sigil_lsm_verdict {
	__u32 rule_index;	/* index into the generation's rule table in user space */
	__u8 action;		/* enum sigil_action; SIGIL_ACTION_NONE when no rule applies */
	__u8 pad[3];
};

/*
 * Verdicts for the two kinds of access. A file open has write intent when
 * f_mode has FMODE_WRITE or f_flags has O_TRUNC. Exec decisions and opens
 * without write intent use read. A readOnly rule contributes its action to
 * read and SIGIL_ACTION_BLOCK to write.
 */
struct sigil_lsm_access {
	struct sigil_lsm_verdict read;
	struct sigil_lsm_verdict write;
};

/* Key of the exact-file map: the file's inode, seen by one subject for one kind. */
struct sigil_lsm_inode_key {
	__u64 ino;		/* inode->i_ino */
	__u32 dev;		/* inode->i_sb->s_dev, the kernel's encoding: major << 20 | minor */
	__u32 subject;
	__u32 kind;		/* enum sigil_lsm_kind */
	__u32 pad;
};

/* Key of the directory map. */
struct sigil_lsm_directory_key {
	__u64 hash;		/* FNV-1a of the directory path with a trailing '/', see above */
	__u32 subject;
	__u32 kind;		/* enum sigil_lsm_kind */
};

/*
 * Value of the directory map. Recursive rules of a directory apply to every
 * entry below it; non-recursive ones to the entries directly in it. Both apply
 * to the directory itself when it is opened.
 */
struct sigil_lsm_directory_rules {
	struct sigil_lsm_access direct;		/* non-recursive rules */
	struct sigil_lsm_access subtree;	/* recursive rules */
};

/*
 * Key of the listener map, which lets lsm/socket_connect find the identity
 * of a local peer: lsm/socket_bind writes the binding socket under its
 * address, IPv4 stored IPv4-mapped as in sigil_cidr_key.
 */
struct sigil_lsm_listener_key {
	__u8 addr[16];
	__u32 netns;		/* inode number of the socket's network namespace */
	__u16 port;		/* host byte order */
	__u8 protocol;		/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* Value of the listener map. */
struct sigil_lsm_listener {
	__u64 sock;		/* kernel address of the struct sock; compared, read only with bpf_probe_read_kernel */
	__u64 cookie;		/* socket cookie, which tells a reused struct sock apart */
	__u32 tgid;		/* the process that called bind() */
	__u32 id;		/* its identity at that time */
	__u64 start_ticks;	/* its start time, to detect a reused tgid */
};

/* Fields that exec and file decision records share. */
struct sigil_path_decision {
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 subject_id;
	__u32 generation;	/* rule-set generation that decided */
	__u32 rule_index;	/* valid when reason is SIGIL_REASON_RULE */
	__u32 dev;		/* of the file, kernel encoding */
	__u64 ino;
	__u64 cgroup_id;
	__s32 path_len;		/* bpf_d_path's result: the path's length with its NUL, or a negative errno */
	__u8 action;		/* enum sigil_action that applied */
	__u8 reason;		/* enum sigil_decision_reason */
	__u8 denied;		/* 1 when the hook returned -EPERM */
	__u8 match;		/* enum sigil_lsm_match */
};

/* Ring-buffer record of an exec decision (lsm/bprm_check_security). */
struct sigil_exec_decision_record {
	struct sigil_record_header header;
	struct sigil_path_decision decision;
	char comm[SIGIL_COMM_LEN];
	char path[SIGIL_PATH_MAX];	/* the resolved path, cut to SIGIL_PATH_MAX - 1 bytes */
};

/* Ring-buffer record of a file-open decision (lsm/file_open). */
struct sigil_file_decision_record {
	struct sigil_record_header header;
	struct sigil_path_decision decision;
	__u8 write_intent;	/* 1 when the open has FMODE_WRITE or O_TRUNC */
	__u8 exec_open;		/* 1 when execve opened the file (__FMODE_EXEC in f_flags) */
	__u8 pad[6];
	char comm[SIGIL_COMM_LEN];
	char path[SIGIL_PATH_MAX];	/* the resolved path, cut to SIGIL_PATH_MAX - 1 bytes */
};

#endif /* SIGIL_LSM_H */
