/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the LSM object (bpf/.output/sigil-lsm.bpf.o). maps.bpf.c in this
 * directory defines each map once, the other sources see extern declarations.
 *
 * The LSM object shares maps with the main object (sigil.bpf.o): user space
 * pins the main object's maps and gives this object the same pin paths before
 * load, so libbpf reuses them instead of creating new ones. A shared map must
 * have the type, key and value sizes, max_entries and flags of the main
 * object's, or the load fails because the pinned map is incompatible. Shared
 * are the maps of bpf/include/maps.bpf.h and the egress rule maps of
 * bpf/include/egress.bpf.h.
 *
 * Inner maps are declared by key_size and value_size, not by BTF types: see
 * SIGIL_GENERATION_MAP in maps.bpf.h.
 */
#ifndef SIGIL_LSM_MAPS_BPF_H
#define SIGIL_LSM_MAPS_BPF_H

#include "maps.bpf.h"
#include "egress.bpf.h"
#include "sigil_lsm.h"

/* Owned by the LSM object. */

/* Hash seed of the directory rules: index 0 contains a struct sigil_lsm_config. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_lsm_config);
} sigil_lsm_config SEC(".maps");

/* Generation -> per-subject exec and file settings of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_MAX_SUBJECTS,
			       __u32, struct sigil_lsm_subject)
	sigil_lsm_subjects SEC(".maps");

/* Generation -> exact-file rules of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_LSM_MAX_INODE_KEYS,
			       struct sigil_lsm_inode_key, struct sigil_lsm_access)
	sigil_lsm_inodes SEC(".maps");

/* Generation -> directory rules of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_LSM_MAX_DIRECTORY_KEYS,
			       struct sigil_lsm_directory_key, struct sigil_lsm_directory_rules)
	sigil_lsm_directories SEC(".maps");

/* Local listening and bound sockets, written at bind(). */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SIGIL_LSM_MAX_LISTENERS);
	__type(key, struct sigil_lsm_listener_key);
	__type(value, struct sigil_lsm_listener);
} sigil_lsm_listeners SEC(".maps");

/* Buffer that bpf_d_path fills, one per CPU, too large for the 512-byte BPF stack. */
struct sigil_lsm_path_buffer {
	__u64 owner;		/* tgid << 32 | pid of the program run that wrote path, as bpf_get_current_pid_tgid() returns */
	char path[SIGIL_LSM_PATH_BUFFER];
};

SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_lsm_path_buffer);
} sigil_lsm_path_buffers SEC(".maps");

/*
 * Entries of the shared directory-verdict cache (decision_cache.bpf.h). A
 * guess at the directories a node opens files in often, not measured. The
 * kernel preallocates LRU maps: with about 152 bytes per element (72-byte
 * key, 32-byte value, 48-byte struct htab_elem) this is about 2.5 MB, an
 * estimate.
 */
#define SIGIL_LSM_DECISION_CACHE_ENTRIES 16384

/*
 * Key of a cached directory verdict: the facts the directory walk depended on
 * (see decision_cache.bpf.h). Eight-byte words only, so that it can be
 * compared word by word.
 */
struct sigil_lsm_decision_cache_key {
	__u64 mount;		/* struct vfsmount * of the file */
	__u64 anchor;		/* struct dentry * of the parent directory, or of the opened directory */
	__u64 anchor_ino;
	__u64 root_mount;	/* fs->root of the process */
	__u64 root;
	__u64 root_ino;
	__u32 anchor_generation;	/* i_generation of the anchor's inode */
	__u32 root_generation;
	__u32 generation;	/* rule set */
	__u32 subject;
	__u8 kind;		/* enum sigil_lsm_kind */
	__u8 write_intent;
	__u8 is_directory;
	__u8 pad[5];
};

/* Sequence counts of the kernel's rename_lock and mount_lock when the decision was made. */
struct sigil_lsm_decision_stamp {
	__u32 rename_sequence;
	__u32 mount_sequence;
};

/* A cached result of the directory walk, valid while its stamp is current. */
struct sigil_lsm_directory_verdict {
	struct sigil_lsm_decision_stamp stamp;
	__u32 rule_index;
	__u8 action;		/* enum sigil_action; SIGIL_ACTION_NONE when no directory rule matched */
	__u8 reason;		/* enum sigil_decision_reason */
	__u8 match;		/* enum sigil_lsm_match */
	__u8 pad;
	/*
	 * Length that bpf_d_path returned minus the file's name length: the
	 * anchor's path with its '/' and the NUL. A file whose name makes the
	 * path longer than SIGIL_LSM_PATH_BUFFER is not decided from the cache.
	 */
	__u32 prefix_len;
	__u32 fingerprint;	/* decision_fingerprint() of the key, checked on lookup */
	/*
	 * The subject's entry of the generation in the key. User space writes
	 * each generation's maps once, before it publishes them, so the copy
	 * stays true.
	 */
	struct sigil_lsm_subject subject_rules;
};

SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SIGIL_LSM_DECISION_CACHE_ENTRIES);
	__type(key, struct sigil_lsm_decision_cache_key);
	__type(value, struct sigil_lsm_directory_verdict);
} sigil_lsm_decision_cache SEC(".maps");

/*
 * Directory verdicts that recent decisions on one CPU made or found, as a
 * per-CPU array: 16 slots of 112 bytes, 1,792 bytes per possible CPU. The
 * slot is chosen by the key's fingerprint, so two directories can take the
 * same slot in turn. The count is a power of two, a guess, not measured.
 */
#define SIGIL_LSM_CPU_DECISION_SLOTS 16

/* One slot. An odd sequence means that a program run is writing it. */
struct sigil_lsm_cpu_decision {
	__u32 sequence;
	__u32 pad;
	struct sigil_lsm_decision_cache_key key;
	struct sigil_lsm_directory_verdict verdict;
};

struct sigil_lsm_cpu_decisions {
	struct sigil_lsm_cpu_decision slots[SIGIL_LSM_CPU_DECISION_SLOTS];
};

SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_lsm_cpu_decisions);
} sigil_lsm_cpu_decisions SEC(".maps");

/*
 * Fingerprints of decisions offered to the cache once. The count is a power
 * of two, and a guess, not measured. Concurrent writers may overwrite each
 * other's slots, which only changes which decisions are stored.
 */
#define SIGIL_LSM_DECISION_FILTER_SLOTS 8192

SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SIGIL_LSM_DECISION_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} sigil_lsm_decision_filter SEC(".maps");

#endif /* SIGIL_LSM_MAPS_BPF_H */
