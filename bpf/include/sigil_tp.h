/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Records and limits of the tracepoint-kill programs (bpf/tracepoint/,
 * linked into bpf/.output/sigil-tp.bpf.o), the exec and file enforcer of
 * kernels without BPF LSM. Their rule maps reuse the key and value structs
 * of sigil_lsm.h. This header is the only definition of what it adds:
 * src/kernel/tp-layout.ts mirrors it and test/kernel/tp-layout.test.ts
 * checks the two against each other. Fixed-width types only; every struct
 * is padded by hand to a multiple of 8.
 */
#ifndef SIGIL_TP_H
#define SIGIL_TP_H

#include "sigil.h"
#include "sigil_lsm.h"

/* Map sizes. User space creates the inner rule maps with the same sizes. */
#define SIGIL_TP_MAX_INODE_KEYS 262144
#define SIGIL_TP_MAX_DIRECTORY_KEYS 262144

/*
 * Steps of the walk from a file up to the root. Each step moves to the parent
 * directory or crosses from a mount's root to its mount point. A file deeper
 * than that is matched by exact-file rules, the directory rules of the
 * ancestors the walk reached, and the posture.
 */
#define SIGIL_TP_MAX_WALK_STEPS 128

/* Record types of the tracepoint-kill programs; sigil.h and sigil_lsm.h use the ones below 24. */
enum sigil_tp_record_type {
	SIGIL_RECORD_TP_EXEC_DECISION = 24,
	SIGIL_RECORD_TP_FILE_DECISION = 25,
};

/* System call that opened the file of a file decision. */
enum sigil_tp_syscall {
	SIGIL_TP_SYSCALL_EXEC = 0,	/* an exec decision: any execve() or execveat() */
	SIGIL_TP_SYSCALL_OPENAT = 1,
	SIGIL_TP_SYSCALL_OPENAT2 = 2,
	SIGIL_TP_SYSCALL_OPEN = 3,
	SIGIL_TP_SYSCALL_CREAT = 4,
	SIGIL_TP_SYSCALL_OPEN_BY_HANDLE_AT = 5,
};

/*
 * Ring-buffer record of one exec or file decision. The decision fields mean
 * what they mean in the LSM records, with two exceptions. denied is 1 when
 * the verdict was Block and the program sent SIGKILL. path_len is the length
 * of path with its NUL, or a negative errno when it could not be read.
 */
struct sigil_tp_decision_record {
	struct sigil_record_header header;
	struct sigil_path_decision decision;
	__s32 kill_result;	/* bpf_send_signal's result: 0 when SIGKILL was queued, else a negative errno */
	__s32 fd;		/* file decisions: the descriptor the open returned; -1 for exec */
	__u32 syscall;		/* enum sigil_tp_syscall */
	__u8 write_intent;	/* 1 when the file was opened with FMODE_WRITE or O_TRUNC */
	__u8 walk_complete;	/* 1 when the walk reached the root within SIGIL_TP_MAX_WALK_STEPS */
	__u8 pad[2];
	char comm[SIGIL_COMM_LEN];
	/* The path the process passed to open() or execve(), unresolved and cut to SIGIL_PATH_MAX - 1 bytes. */
	char path[SIGIL_PATH_MAX];
};

#endif /* SIGIL_TP_H */
