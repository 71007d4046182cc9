/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map declarations shared by the BPF programs. maps.bpf.c defines each map
 * once; the other objects see these extern declarations, and the static
 * linker (bpftool gen object) resolves them to the one definition.
 */
#ifndef SIGIL_MAPS_BPF_H
#define SIGIL_MAPS_BPF_H

#include <bpf/bpf_core_read.h>
#include "sigil.h"

#ifdef SIGIL_DEFINE_MAPS
#define SIGIL_MAP
#else
#define SIGIL_MAP extern
#endif

/* Rule-set settings: index 0 contains the active generation. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sigil_settings);
} sigil_settings SEC(".maps");

/* tgid -> identity. Filled at fork (inherited) and by user space after attestation. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SIGIL_MAX_PROCESSES);
	__type(key, __u32);
	__type(value, struct sigil_identity);
} sigil_identities SEC(".maps");

/* Decision records for user space: connect, bind, and the LSM object's decisions. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SIGIL_RINGBUF_BYTES);
} sigil_events SEC(".maps");

/* Fork, exec and exit records for user space. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SIGIL_PROCESS_RINGBUF_BYTES);
} sigil_process_events SEC(".maps");

/* Records that could not be written, per CPU, indexed by enum sigil_drop_reason. */
SIGIL_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SIGIL_DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} sigil_drops SEC(".maps");

/* Counts a record that could not be written. */
static __always_inline void sigil_count_drop(__u32 reason)
{
	__u64 *count = bpf_map_lookup_elem(&sigil_drops, &reason);

	if (count)
		__sync_fetch_and_add(count, 1);
}

/* Returns the identity id of a tgid, or 0 when it has none. */
static __always_inline __u32 sigil_identity_of(__u32 tgid)
{
	struct sigil_identity *identity = bpf_map_lookup_elem(&sigil_identities, &tgid);

	return identity ? identity->id : 0;
}

/* Returns a task's process start time in clock ticks, as /proc/<pid>/stat gives it. */
static __always_inline __u64 sigil_start_ticks(struct task_struct *task)
{
	return BPF_CORE_READ(task, group_leader, start_boottime) / SIGIL_NSEC_PER_CLOCK_TICK;
}

/*
 * Returns the identity of a socket's owner: the owner's current identity while
 * the process that bound it still runs (it may have executed a new program
 * since), else the identity recorded at bind. A tgid whose start time differs
 * from the recorded one was reused by another process after the owner exited,
 * and that process's identity must not be taken for the owner's.
 */
static __always_inline __u32 sigil_owner_identity(__u32 tgid, __u32 id_at_bind, __u64 start_ticks)
{
	struct sigil_identity *identity = bpf_map_lookup_elem(&sigil_identities, &tgid);

	if (!identity || !identity->id)
		return id_at_bind;
	if (identity->start_ticks && start_ticks && identity->start_ticks != start_ticks)
		return id_at_bind;
	return identity->id;
}

#endif /* SIGIL_MAPS_BPF_H */
