/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the tracepoint-kill object (bpf/.output/sigil-tp.bpf.o). maps.bpf.c
 * in this directory defines each map once; the other sources see extern
 * declarations.
 *
 * The object shares the maps of bpf/include/maps.bpf.h with the main object
 * (sigil.bpf.o): user space gives it the main object's pin paths before load,
 * so libbpf reuses those maps. Its rule maps are its own. As in the LSM
 * object, inner maps are declared by key_size and value_size, so that the
 * maps user space creates without BTF match them on every kernel.
 */
#ifndef SIGIL_TP_MAPS_BPF_H
#define SIGIL_TP_MAPS_BPF_H

#include "maps.bpf.h"
#include "sigil_tp.h"

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
} sigil_tp_subjects SEC(".maps");

/* Generation -> exact-file rules of that rule set, keyed by the file's inode. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_TP_MAX_INODE_KEYS);
		__uint(key_size, sizeof(struct sigil_lsm_inode_key));
		__uint(value_size, sizeof(struct sigil_lsm_access));
	});
} sigil_tp_inodes SEC(".maps");

/* Generation -> directory rules of that rule set, keyed by the directory's inode. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, SIGIL_GENERATIONS);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(map_flags, BPF_F_NO_PREALLOC);
		__uint(max_entries, SIGIL_TP_MAX_DIRECTORY_KEYS);
		__uint(key_size, sizeof(struct sigil_lsm_inode_key));
		__uint(value_size, sizeof(struct sigil_lsm_directory_rules));
	});
} sigil_tp_directories SEC(".maps");

#endif /* SIGIL_TP_MAPS_BPF_H */
