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

/*
 * The type of an outer map from rule-set generation to an inner map of that
 * generation's rules: SIGIL_MAP SIGIL_GENERATION_MAP(...) name SEC(".maps");
 * User space creates the inner maps with the same type, sizes and flags.
 * The inner template gives key_size and value_size, not BTF types. An
 * inner-map template created with BTF gets timer_off -ENOENT on Linux 6.1,
 * while a map that user space creates without BTF gets -EINVAL, so 6.1
 * rejects every inner map user space inserts (EINVAL). Without BTF the two
 * match, and newer kernels accept either way.
 */
#define SIGIL_GENERATION_MAP(inner_type, inner_max_entries, inner_key, inner_value)	\
	struct {								\
		__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);			\
		__uint(max_entries, SIGIL_GENERATIONS);				\
		__type(key, __u32);						\
		__array(values, struct {					\
			__uint(type, inner_type);				\
			__uint(map_flags, BPF_F_NO_PREALLOC);			\
			__uint(max_entries, inner_max_entries);			\
			__uint(key_size, sizeof(inner_key));			\
			__uint(value_size, sizeof(inner_value));		\
		});								\
	}

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

/*
 * Reserves a record of size bytes in sigil_events and fills its header.
 * Returns NULL when the ring buffer is full, which is counted, never silent.
 */
static __always_inline void *sigil_reserve_event(__u32 type, __u32 size)
{
	struct sigil_record_header *header = bpf_ringbuf_reserve(&sigil_events, size, 0);

	if (!header) {
		sigil_count_drop(SIGIL_DROP_EVENTS_RINGBUF_FULL);
		return NULL;
	}
	header->type = type;
	header->size = size;
	header->ktime_ns = bpf_ktime_get_boot_ns();
	return header;
}

/*
 * Records of sigil_events that do not wake the consumer wake it once the
 * ring contains SIGIL_WAKEUP_BYTES of unread data: the record that finds the
 * unread data within SIGIL_WAKEUP_WINDOW above that mark forces a wakeup.
 * The ring stays readable for the consumer's poll while it contains data,
 * so one wakeup per crossing is enough, and a consumer that lags far behind
 * does not cost every later record a wakeup. A forced wakeup cost a connect
 * record about 10 us on a 2-vCPU VM, an estimate from bench/connect-cost.js
 * runs with a 64 KiB window.
 * NOTE: when other CPUs reserve more than the window between one record's
 * reserve and its query, the crossing can pass without a wakeup, and the
 * consumer reads the backlog at its poll timeout.
 */
#define SIGIL_WAKEUP_BYTES (SIGIL_RINGBUF_BYTES / 8)
#define SIGIL_WAKEUP_WINDOW (8 * 1024)

/*
 * Returns the bpf_ringbuf_submit flags for a record of sigil_events. Waking
 * the consumer for every record costs more than the rest of an open (about
 * 7 us against 0.6 us, measured with bench/open-exec-cost.js), so records
 * that need no prompt reading (wake false) wake it only at the mark above.
 * The consumer reads them at its poll timeout (100 ms in
 * native/ring_buffer_consumer.cc) or when another record wakes it.
 */
static __always_inline __u64 sigil_event_submit_flags(bool wake)
{
	__u64 unread;

	if (wake)
		return 0;
	unread = bpf_ringbuf_query(&sigil_events, BPF_RB_AVAIL_DATA);
	if (unread >= SIGIL_WAKEUP_BYTES && unread < SIGIL_WAKEUP_BYTES + SIGIL_WAKEUP_WINDOW)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* Stores the parent's tgid, the uid and the gid of the current process. */
static __always_inline void sigil_current_ids(__u32 *ppid, __u32 *uid, __u32 *gid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 uid_gid = bpf_get_current_uid_gid();

	*ppid = BPF_CORE_READ(task, real_parent, tgid);
	*uid = (__u32)uid_gid;
	*gid = uid_gid >> 32;
}

/*
 * Returns whether a rule (action, rule_index) outranks the verdict so far
 * (current_action, current_index): the stronger action wins, Block over Audit
 * over Allow, and among equal actions the rule that comes first in the set.
 */
static __always_inline bool sigil_outranks(__u8 action, __u32 rule_index, __u8 current_action,
					   __u32 current_index)
{
	return action > current_action || (action == current_action && rule_index < current_index);
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
