/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the tracepoint-kill object (bpf/.output/sigil-tp.bpf.o). maps.bpf.c
 * in this directory defines each map once; the other sources see extern
 * declarations.
 *
 * The object shares the maps of bpf/include/maps.bpf.h with the main object
 * (sigil.bpf.o): user space gives it the main object's pin paths before load,
 * so libbpf reuses those maps. Its rule maps are its own, declared with
 * SIGIL_GENERATION_MAP of maps.bpf.h like those of the other objects.
 */
#ifndef SIGIL_TP_MAPS_BPF_H
#define SIGIL_TP_MAPS_BPF_H

#include "maps.bpf.h"
#include "sigil_tp.h"

/* Generation -> per-subject exec and file settings of that rule set. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_MAX_SUBJECTS,
			       __u32, struct sigil_lsm_subject)
	sigil_tp_subjects SEC(".maps");

/* Generation -> exact-file rules of that rule set, keyed by the file's inode. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_TP_MAX_INODE_KEYS,
			       struct sigil_lsm_inode_key, struct sigil_lsm_access)
	sigil_tp_inodes SEC(".maps");

/* Generation -> directory rules of that rule set, keyed by the directory's inode. */
SIGIL_MAP SIGIL_GENERATION_MAP(BPF_MAP_TYPE_HASH, SIGIL_TP_MAX_DIRECTORY_KEYS,
			       struct sigil_lsm_inode_key, struct sigil_lsm_directory_rules)
	sigil_tp_directories SEC(".maps");

#endif /* SIGIL_TP_MAPS_BPF_H */
