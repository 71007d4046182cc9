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
 * are the maps of bpf/include/maps.bpf.h and the three egress rule maps below.
 *
 * Inner maps are declared by key_size and value_size, not by BTF types. An
 * inner-map template created with BTF gets timer_off -ENOENT on Linux 6.1,
 * while a map that user space creates without BTF gets -EINVAL, so 6.1
 * rejects every inner map user space inserts (EINVAL). Without BTF the two
 * match, and newer kernels accept either way.
 */
#ifndef SIGIL_LSM_MAPS_BPF_H
#define SIGIL_LSM_MAPS_BPF_H

#include "maps.bpf.h"
#include "sigil_lsm.h"

/*
 * Shared with the main object. These three are copies of the declarations in
 * bpf/connect.bpf.c and must change with them. The inner definitions matter
 * only where this object creates the map instead of reusing the pin.
 */

/* Generation -> per-subject egress settings of that rule set. */
SIGIL_MAP struct {
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
SIGIL_MAP struct {
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
SIGIL_MAP struct {
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

/* Owned by the LSM object. */

/* Hash seed of the directory rules: index 0 contains a struct sigil_lsm_config. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_lsm_config);
} sigil_lsm_config SEC(".maps");

/* Generation -> per-subject exec and file settings of that rule set. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_MAX_SUBJECTS);
		__uint(key_size, sizeof(__u32));
		__uint(value_size, sizeof(struct sigil_lsm_subject));
	});
} sigil_lsm_subjects SEC(".maps");

/* Generation -> exact-file rules of that rule set. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_LSM_MAX_INODE_KEYS);
		__uint(key_size, sizeof(struct sigil_lsm_inode_key));
		__uint(value_size, sizeof(struct sigil_lsm_access));
	});
} sigil_lsm_inodes SEC(".maps");

/* Generation -> directory rules of that rule set. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_LSM_MAX_DIRECTORY_KEYS);
		__uint(key_size, sizeof(struct sigil_lsm_directory_key));
		__uint(value_size, sizeof(struct sigil_lsm_directory_rules));
	});
} sigil_lsm_directories SEC(".maps");

/* Local listening and bound sockets, written at bind(). */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SIGIL_LSM_MAX_LISTENERS);
	__type(key, struct sigil_lsm_listener_key);
	__type(value, struct sigil_lsm_listener);
} sigil_lsm_listeners SEC(".maps");

/* Buffer that bpf_d_path fills, one per CPU, too large for the 512-byte BPF stack. */
struct sigil_lsm_path_buffer {
	__u64 owner;		/* bpf_get_current_pid_tgid() of the program run that wrote path */
	char path[SIGIL_LSM_PATH_BUFFER];
};

SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_lsm_path_buffer);
} sigil_lsm_path_buffers SEC(".maps");

#endif /* SIGIL_LSM_MAPS_BPF_H */
